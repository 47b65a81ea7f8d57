//! Property tests over random command sequences issued against the standard fixture:
//! - replaying the accepted history (sealed into envelopes, written as JSON, read back and
//!   verified) gives exactly the state the incremental fold built;
//! - stock accepted locally never goes below zero;
//! - a claim is decided at most once, and a fold keeps the first decision;
//! - an appointment never leaves a terminal state, whatever arrives after.
mod support;

use domain::command::*;
use domain::envelope::{self, Envelope, EnvelopeDraft, Hash, Origin, Recording};
use domain::event::*;
use domain::memory::MemoryStore;
use domain::state::Stamp;
use domain::values::*;
use domain::{Actor, Facts};
use ed25519_dalek::SigningKey;
use proptest::prelude::*;
use support::*;

#[derive(Clone, Debug)]
enum Op {
    Book {
        appt: u8,
        patient_self: bool,
        doctor2: bool,
        slot: u8,
        length: u8,
    },
    Approve(u8),
    Reject(u8),
    Reschedule {
        appt: u8,
        slot: u8,
        length: u8,
    },
    Cancel {
        appt: u8,
        patient_self: bool,
    },
    Complete(u8),
    Receive {
        drug: u8,
        quantity: i64,
    },
    Adjust {
        drug: u8,
        delta: i64,
    },
    Prescribe {
        rx: u8,
        drug: u8,
        quantity: i64,
    },
    Dispense(u8),
    Invoice {
        inv: u8,
        amount: i64,
    },
    Pay {
        inv: u8,
        amount: i64,
    },
    Claim {
        claim: u8,
        inv: u8,
    },
    ApproveClaim {
        claim: u8,
        amount: i64,
        wrong_insurer: bool,
    },
    RejectClaim(u8),
    UpdatePhone {
        digits: u32,
    },
    Diagnose,
}

fn op() -> impl Strategy<Value = Op> {
    let small = 0u8..4;
    prop_oneof![
        (small.clone(), any::<bool>(), any::<bool>(), 0u8..12, 1u8..4).prop_map(
            |(appt, patient_self, doctor2, slot, length)| Op::Book {
                appt,
                patient_self,
                doctor2,
                slot,
                length
            }
        ),
        small.clone().prop_map(Op::Approve),
        small.clone().prop_map(Op::Reject),
        (small.clone(), 0u8..12, 1u8..4).prop_map(|(appt, slot, length)| Op::Reschedule {
            appt,
            slot,
            length
        }),
        (small.clone(), any::<bool>())
            .prop_map(|(appt, patient_self)| Op::Cancel { appt, patient_self }),
        small.clone().prop_map(Op::Complete),
        (0u8..2, 1i64..20).prop_map(|(drug, quantity)| Op::Receive { drug, quantity }),
        (0u8..2, -25i64..25).prop_map(|(drug, delta)| Op::Adjust { drug, delta }),
        (small.clone(), 0u8..2, 1i64..15).prop_map(|(rx, drug, quantity)| Op::Prescribe {
            rx,
            drug,
            quantity
        }),
        small.clone().prop_map(Op::Dispense),
        (small.clone(), 1i64..50_000).prop_map(|(inv, amount)| Op::Invoice { inv, amount }),
        (small.clone(), 1i64..60_000).prop_map(|(inv, amount)| Op::Pay { inv, amount }),
        (small.clone(), small.clone()).prop_map(|(claim, inv)| Op::Claim { claim, inv }),
        (small.clone(), 1i64..60_000, any::<bool>()).prop_map(|(claim, amount, wrong_insurer)| {
            Op::ApproveClaim {
                claim,
                amount,
                wrong_insurer,
            }
        }),
        small.clone().prop_map(Op::RejectClaim),
        (1_000_000u32..9_999_999).prop_map(|digits| Op::UpdatePhone { digits }),
        Just(Op::Diagnose),
    ]
}

fn id(kind: u128, n: u8) -> uuid::Uuid {
    uuid(0x7000 + kind * 0x100 + u128::from(n))
}

fn appt(n: u8) -> AppointmentId {
    AppointmentId::from_uuid(id(1, n))
}
fn rx(n: u8) -> PrescriptionId {
    PrescriptionId::from_uuid(id(2, n))
}
fn inv(n: u8) -> InvoiceId {
    InvoiceId::from_uuid(id(3, n))
}
fn claim(n: u8) -> ClaimId {
    ClaimId::from_uuid(id(4, n))
}
fn drug_code(n: u8) -> DrugCode {
    drug(["AMOX500", "PARA1G"][usize::from(n)])
}
fn slot_time(slot: u8) -> Timestamp {
    at("2026-12-01T08:00:00Z").plus_minutes(u32::from(slot) * 30)
}

/// Turns an op into an actor and a command against the fixture's cast.
fn command(f: &Fixture, op: &Op) -> (Actor, Command) {
    let p = f.patient;
    match op.clone() {
        Op::Book {
            appt: a,
            patient_self,
            doctor2,
            slot,
            length,
        } => (
            if patient_self {
                f.patient_user.clone()
            } else {
                f.receptionist.clone()
            },
            BookAppointment {
                appointment_id: appt(a),
                patient_id: p,
                doctor_id: if doctor2 {
                    f.doctor2.user_id
                } else {
                    f.doctor.user_id
                },
                starts_at: slot_time(slot),
                duration_minutes: minutes(u32::from(length) * 30),
                reason: text("visit"),
            }
            .into(),
        ),
        Op::Approve(a) => (
            f.doctor.clone(),
            ApproveAppointment {
                appointment_id: appt(a),
                reason: None,
            }
            .into(),
        ),
        Op::Reject(a) => (
            f.doctor.clone(),
            RejectAppointment {
                appointment_id: appt(a),
                reason: None,
            }
            .into(),
        ),
        Op::Reschedule {
            appt: a,
            slot,
            length,
        } => (
            f.receptionist.clone(),
            RescheduleAppointment {
                appointment_id: appt(a),
                starts_at: slot_time(slot),
                duration_minutes: minutes(u32::from(length) * 30),
            }
            .into(),
        ),
        Op::Cancel {
            appt: a,
            patient_self,
        } => (
            if patient_self {
                f.patient_user.clone()
            } else {
                f.receptionist.clone()
            },
            CancelAppointment {
                appointment_id: appt(a),
                reason: text("cannot come"),
            }
            .into(),
        ),
        Op::Complete(a) => (
            f.doctor.clone(),
            CompleteAppointment {
                appointment_id: appt(a),
                summary: None,
            }
            .into(),
        ),
        Op::Receive { drug, quantity } => (
            f.pharmacist.clone(),
            ReceiveStock {
                drug_code: drug_code(drug),
                name: name("drug"),
                quantity: qty(quantity),
                batch: None,
                expires_on: None,
            }
            .into(),
        ),
        Op::Adjust { drug, delta } => (
            f.pharmacist.clone(),
            AdjustStock {
                drug_code: drug_code(drug),
                delta: StockDelta::new(if delta == 0 { 1 } else { delta }).unwrap(),
                reason: text("count"),
            }
            .into(),
        ),
        Op::Prescribe {
            rx: r,
            drug,
            quantity,
        } => (
            f.doctor.clone(),
            IssuePrescription {
                prescription_id: rx(r),
                patient_id: p,
                appointment_id: None,
                items: vec![PrescriptionItem {
                    drug_code: drug_code(drug),
                    name: name("drug"),
                    dose: Dose::parse("1 daily").unwrap(),
                    quantity: qty(quantity),
                }],
            }
            .into(),
        ),
        Op::Dispense(r) => (
            f.pharmacist.clone(),
            DispensePrescription {
                prescription_id: rx(r),
            }
            .into(),
        ),
        Op::Invoice { inv: i, amount } => (
            f.accountant.clone(),
            IssueInvoice {
                invoice_id: inv(i),
                patient_id: p,
                appointment_id: None,
                currency: kes(),
                lines: vec![InvoiceLine {
                    service_code: service("CONSULT"),
                    description: text("consultation"),
                    amount_cents: cents(amount),
                }],
            }
            .into(),
        ),
        Op::Pay { inv: i, amount } => (
            f.accountant.clone(),
            RecordPayment {
                invoice_id: inv(i),
                amount_cents: cents(amount),
                method: PaymentMethod::Cash,
            }
            .into(),
        ),
        Op::Claim { claim: c, inv: i } => (
            f.accountant.clone(),
            SubmitClaim {
                claim_id: claim(c),
                invoice_id: inv(i),
                plan_id: f.plan_x,
                member_id: MemberId::parse("M-1").unwrap(),
            }
            .into(),
        ),
        Op::ApproveClaim {
            claim: c,
            amount,
            wrong_insurer,
        } => (
            if wrong_insurer {
                f.insurer_y_user.clone()
            } else {
                f.insurer_x_user.clone()
            },
            ApproveClaim {
                claim_id: claim(c),
                approved_cents: cents(amount),
            }
            .into(),
        ),
        Op::RejectClaim(c) => (
            f.insurer_x_user.clone(),
            RejectClaim {
                claim_id: claim(c),
                reason: text("not covered"),
            }
            .into(),
        ),
        Op::UpdatePhone { digits } => (
            f.nurse.clone(),
            UpdatePatientDetails {
                patient_id: p,
                changes: PatientChanges {
                    phone: Some(Phone::parse(&format!("+2547{digits}")).unwrap()),
                    ..Default::default()
                },
            }
            .into(),
        ),
        Op::Diagnose => (
            f.doctor.clone(),
            RecordDiagnosis {
                patient_id: p,
                icd10_code: icd10("J45.9"),
                description: text("asthma"),
                appointment_id: None,
            }
            .into(),
        ),
    }
}

fn stock_balances(f: &Fixture) -> Vec<i64> {
    (0..2)
        .filter_map(|d| {
            f.world
                .store
                .stock_item(StockItemId::for_drug(f.hospital_a, &drug_code(d)))
        })
        .map(|s| s.balance)
        .collect()
}

/// Runs the ops, checking stock after each accepted command; returns the fixture.
fn run(ops: &[Op]) -> Fixture {
    let mut f = Fixture::new();
    for op in ops {
        let (actor, cmd) = command(&f, op);
        if f.world.run(&actor, cmd).is_ok() {
            for balance in stock_balances(&f) {
                assert!(balance >= 0, "after {op:?} a stock balance is {balance}");
            }
        }
    }
    f
}

/// Seals every recorded event into its node's chain, writes it as JSON text, reads it back,
/// verifies the chain, and folds the decoded events into a fresh store.
fn replay_through_envelopes(history: &[(Event, Stamp)]) -> MemoryStore {
    let key = SigningKey::from_bytes(&[7; 32]);
    let mut versions = std::collections::HashMap::new();
    let mut prev_hash = Hash::GENESIS;
    let mut texts = Vec::new();
    for (seq, (event, stamp)) in history.iter().enumerate() {
        let version = versions.entry(event.aggregate()).or_insert(0u64);
        *version += 1;
        let draft = EnvelopeDraft::new(
            event,
            Recording {
                event_id: stamp.event_id,
                aggregate_version: *version,
                occurred_at: stamp.occurred_at,
                actor: envelope::Actor {
                    user_id: UserId::from_uuid(uuid(1)),
                    role: Role::Admin,
                },
                origin: Origin {
                    node_id: stamp.node_id,
                    node_seq: seq as u64 + 1,
                },
                command_id: CommandId::from_uuid(uuid(2)),
                correlation_id: uuid(3),
                causation_id: uuid(3),
                prev_hash,
            },
        );
        let sealed = draft.seal(&key).expect("every event payload is encodable");
        prev_hash = sealed.hash;
        texts.push(serde_json::to_string(&sealed).unwrap());
    }
    let envelopes: Vec<Envelope> = texts
        .iter()
        .map(|t| serde_json::from_str(t).unwrap())
        .collect();
    let node = history.first().map(|(_, s)| s.node_id);
    if let Some(node) = node {
        envelope::verify_chain(node, key.verifying_key(), &envelopes).expect("the chain verifies");
    }
    let mut replayed = MemoryStore::new();
    for (envelope, (original, _)) in envelopes.iter().zip(history) {
        let event = envelope.event().expect("decodes");
        assert_eq!(
            &event, original,
            "an event changed on its way through the envelope"
        );
        replayed.apply(&event, &envelope.stamp());
    }
    replayed
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn replaying_the_accepted_history_gives_the_state_the_incremental_fold_built(ops in prop::collection::vec(op(), 1..40)) {
        let f = run(&ops);
        let replayed = replay_through_envelopes(f.world.store.history());
        prop_assert_eq!(replayed.states(), f.world.store.states());
    }

    #[test]
    fn stock_accepted_locally_never_goes_below_zero(ops in prop::collection::vec(op(), 1..60)) {
        // `run` asserts the balance after every accepted command.
        let f = run(&ops);
        for balance in stock_balances(&f) {
            prop_assert!(balance >= 0);
        }
    }

    #[test]
    fn a_claim_is_decided_at_most_once(ops in prop::collection::vec(op(), 1..60)) {
        let f = run(&ops);
        for c in 0..4 {
            let decisions = f.world.store.history().iter().filter(|(e, _)| match e {
                Event::ClaimApproved(x) => x.claim_id == claim(c),
                Event::ClaimRejected(x) => x.claim_id == claim(c),
                _ => false,
            }).count();
            prop_assert!(decisions <= 1, "claim {} decided {} times", c, decisions);
        }
    }

    #[test]
    fn an_appointment_never_leaves_a_terminal_state(ops in prop::collection::vec(op(), 1..60)) {
        let mut f = Fixture::new();
        let mut terminal: std::collections::HashMap<AppointmentId, domain::appointment::AppointmentStatus> = Default::default();
        for op in &ops {
            let (actor, cmd) = command(&f, op);
            let _ = f.world.run(&actor, cmd);
            for a in 0..4 {
                let Some(state) = f.world.store.appointment(appt(a)) else { continue };
                if let Some(end) = terminal.get(&appt(a)) {
                    prop_assert_eq!(state.status, *end, "appointment left its terminal state after {:?}", op);
                } else if state.status.is_terminal() {
                    terminal.insert(appt(a), state.status);
                }
            }
        }
    }
}

/// Events of one appointment arriving in any order and number (as from several offline sites):
/// the fold never moves it out of a terminal state, and the first decision on a claim stands.
mod folds {
    use super::*;

    fn appointment_event(kind: u8, a: AppointmentId, h: HospitalId) -> Event {
        let u = UserId::from_uuid(uuid(9));
        match kind % 6 {
            0 => AppointmentApproved {
                appointment_id: a,
                hospital_id: h,
                reason: None,
                approved_by: u,
            }
            .into(),
            1 => AppointmentRejected {
                appointment_id: a,
                hospital_id: h,
                reason: None,
                rejected_by: u,
            }
            .into(),
            2 => AppointmentRescheduled {
                appointment_id: a,
                hospital_id: h,
                starts_at: at("2026-12-02T09:00:00Z"),
                duration_minutes: minutes(30),
            }
            .into(),
            3 => AppointmentCancelled {
                appointment_id: a,
                hospital_id: h,
                reason: text("x"),
                cancelled_by: u,
            }
            .into(),
            4 => AppointmentCompleted {
                appointment_id: a,
                hospital_id: h,
                summary: None,
            }
            .into(),
            _ => AppointmentConflictDetected {
                appointment_id: a,
                hospital_id: h,
                doctor_id: u,
                conflicting_appointment_id: AppointmentId::from_uuid(uuid(77)),
                starts_at: at("2026-12-02T09:00:00Z"),
                ends_at: at("2026-12-02T09:30:00Z"),
            }
            .into(),
        }
    }

    proptest! {
        #[test]
        fn any_sequence_of_appointment_events_never_leaves_a_terminal_state(kinds in prop::collection::vec(0u8..6, 0..30)) {
            let mut w = World::new();
            let a = AppointmentId::from_uuid(uuid(70));
            let h = HospitalId::from_uuid(uuid(0xA));
            w.given([AppointmentBooked { appointment_id: a, hospital_id: h, patient_id: PatientId::from_uuid(uuid(71)), doctor_id: UserId::from_uuid(uuid(9)), starts_at: at("2026-12-01T09:00:00Z"), duration_minutes: minutes(30), reason: text("x"), booked_by: UserId::from_uuid(uuid(9)) }.into()]);
            let mut ended = None;
            for k in kinds {
                w.given([appointment_event(k, a, h)]);
                let status = w.store.appointment(a).unwrap().status;
                match ended {
                    Some(end) => prop_assert_eq!(status, end),
                    None if status.is_terminal() => ended = Some(status),
                    None => {}
                }
            }
        }

        #[test]
        fn the_first_decision_on_a_claim_stands_in_any_fold(decisions in prop::collection::vec((any::<bool>(), 1i64..1000), 1..10)) {
            let mut w = World::new();
            let c = ClaimId::from_uuid(uuid(80));
            let h = HospitalId::from_uuid(uuid(0xA));
            let i = InsurerId::from_uuid(uuid(0x1A));
            w.given([ClaimSubmitted { claim_id: c, hospital_id: h, insurer_id: i, plan_id: PlanId::from_uuid(uuid(81)), invoice_id: InvoiceId::from_uuid(uuid(82)), patient_id: PatientId::from_uuid(uuid(83)), member_id: MemberId::parse("M").unwrap(), currency: kes(), claimed_cents: 1000, lines: vec![] }.into()]);
            let decided_by = UserId::from_uuid(uuid(84));
            for (approve, amount) in &decisions {
                let e: Event = if *approve {
                    ClaimApproved { claim_id: c, hospital_id: h, insurer_id: i, approved_cents: *amount, decided_by }.into()
                } else {
                    ClaimRejected { claim_id: c, hospital_id: h, insurer_id: i, reason: text("no"), decided_by }.into()
                };
                w.given([e]);
            }
            let status = w.store.claim(c).unwrap().status;
            let expected = match decisions[0] {
                (true, amount) => domain::claim::ClaimStatus::Approved { approved_cents: amount },
                (false, _) => domain::claim::ClaimStatus::Rejected { reason: text("no") },
            };
            prop_assert_eq!(status, expected);
        }
    }
}
