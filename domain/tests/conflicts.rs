//! The conflict rules, played as they happen: a site goes offline with a copy of what it knew,
//! both sides record facts, and the offline site's facts reach the history later. The reconciler
//! feeds each arriving event to `conflict::answer` with what was known before it.
mod support;

use domain::command::*;
use domain::conflict::answer;
use domain::event::*;
use domain::memory::MemoryStore;
use domain::values::*;
use domain::{Actor, Facts, Stamp, decide};
use support::*;

/// A site that went offline with a copy of the history and decides commands on its own.
struct Site {
    store: MemoryStore,
    node: NodeId,
    now: Timestamp,
    seq: u128,
}

impl Site {
    fn offline_copy(world: &World, node: u128) -> Site {
        Site {
            store: world.store.clone(),
            node: NodeId::from_uuid(uuid(0xB000 + node)),
            now: world.now,
            seq: node << 16,
        }
    }

    /// Decides and records locally; returns the events with their stamps, to arrive later.
    fn record(&mut self, actor: &Actor, cmd: impl Into<Command>) -> Vec<(Event, Stamp)> {
        let meta = CommandMeta {
            command_id: CommandId::from_uuid(uuid(0xC0000 + self.seq)),
            actor: actor.clone(),
            at: self.now,
        };
        let decision = decide(&cmd.into(), &meta, &self.store)
            .expect("the site accepts it with what it knows");
        decision
            .events
            .into_iter()
            .map(|e| {
                self.seq += 1;
                let stamp = Stamp {
                    event_id: EventId::from_uuid(uuid(0xE0000 + self.seq)),
                    occurred_at: self.now,
                    node_id: self.node,
                };
                self.store.apply(&e, &stamp);
                (e, stamp)
            })
            .collect()
    }
}

/// The reconciler's loop over arriving events: answer each against what is known, then fold
/// the event and its answers into what is known.
///
/// Every answer is also judged against only the aggregates the rules read
/// ([`domain::conflict::JUDGED_AGGREGATES`], all the reconciler keeps): it must be the same.
fn arrive(central: &mut MemoryStore, arriving: Vec<(Event, Stamp)>) -> Vec<Event> {
    let mut all = Vec::new();
    for (event, stamp) in arriving {
        let answers = answer(central, &event, &stamp);
        let mut judged_only = MemoryStore::new();
        for (e, s) in central.history() {
            if domain::conflict::judged(e.aggregate().aggregate_type) {
                judged_only.apply(e, s);
            }
        }
        assert_eq!(
            answer(&judged_only, &event, &stamp),
            answers,
            "{} is judged the same with only the judged aggregates kept",
            event.event_type()
        );
        assert!(
            answers.is_empty() || domain::conflict::judged(event.aggregate().aggregate_type),
            "only events of judged aggregates are answered"
        );
        central.apply(&event, &stamp);
        for a in &answers {
            central.apply(
                a,
                &Stamp {
                    event_id: EventId::from_uuid(uuid(0xA0000 + all.len() as u128)),
                    ..stamp
                },
            );
        }
        all.extend(answers);
    }
    all
}

fn book(f: &Fixture, id: u128, doctor: UserId, starts: &str, minutes_long: u32) -> BookAppointment {
    BookAppointment {
        appointment_id: AppointmentId::from_uuid(uuid(id)),
        patient_id: f.patient,
        doctor_id: doctor,
        starts_at: at(starts),
        duration_minutes: minutes(minutes_long),
        reason: text("visit"),
    }
}

#[test]
fn the_booking_that_reaches_the_history_first_keeps_the_slot_and_the_other_needs_rescheduling() {
    let f = Fixture::new();
    let mut site_a = Site::offline_copy(&f.world, 1);
    let mut site_b = Site::offline_copy(&f.world, 2);
    let first = site_a.record(
        &f.receptionist,
        book(&f, 0x61, f.doctor.user_id, "2026-12-01T09:00:00Z", 30),
    );
    let second = site_b.record(
        &f.receptionist,
        book(&f, 0x62, f.doctor.user_id, "2026-12-01T09:15:00Z", 30),
    );
    let mut central = f.world.store.clone();
    assert!(arrive(&mut central, first).is_empty());
    let answers = arrive(&mut central, second);
    assert_eq!(
        answers,
        vec![Event::from(AppointmentConflictDetected {
            appointment_id: AppointmentId::from_uuid(uuid(0x62)),
            hospital_id: f.hospital_a,
            doctor_id: f.doctor.user_id,
            conflicting_appointment_id: AppointmentId::from_uuid(uuid(0x61)),
            starts_at: at("2026-12-01T09:00:00Z"),
            ends_at: at("2026-12-01T09:30:00Z"),
        })]
    );
    let loser = central
        .appointment(AppointmentId::from_uuid(uuid(0x62)))
        .unwrap();
    assert_eq!(
        loser.status,
        domain::appointment::AppointmentStatus::NeedsRescheduling
    );
    let winner = central
        .appointment(AppointmentId::from_uuid(uuid(0x61)))
        .unwrap();
    assert_eq!(
        winner.status,
        domain::appointment::AppointmentStatus::Pending
    );
}

#[test]
fn a_booking_that_lost_its_slot_no_longer_holds_it_for_the_next_arrival() {
    let f = Fixture::new();
    let mut sites: Vec<Site> = (1..=3).map(|n| Site::offline_copy(&f.world, n)).collect();
    let a = sites[0].record(
        &f.receptionist,
        book(&f, 0x61, f.doctor.user_id, "2026-12-01T09:00:00Z", 30),
    );
    let b = sites[1].record(
        &f.receptionist,
        book(&f, 0x62, f.doctor.user_id, "2026-12-01T09:15:00Z", 30),
    );
    // Overlaps only the loser (b), not the winner (a).
    let c = sites[2].record(
        &f.receptionist,
        book(&f, 0x63, f.doctor.user_id, "2026-12-01T09:30:00Z", 30),
    );
    let mut central = f.world.store.clone();
    arrive(&mut central, a);
    assert_eq!(arrive(&mut central, b).len(), 1);
    assert!(
        arrive(&mut central, c).is_empty(),
        "the third booking clashes only with one that lost its slot"
    );
}

#[test]
fn bookings_of_different_doctors_or_times_do_not_clash() {
    let f = Fixture::new();
    let mut site_a = Site::offline_copy(&f.world, 1);
    let mut site_b = Site::offline_copy(&f.world, 2);
    let first = site_a.record(
        &f.receptionist,
        book(&f, 0x61, f.doctor.user_id, "2026-12-01T09:00:00Z", 30),
    );
    let other_doctor = site_b.record(
        &f.receptionist,
        book(&f, 0x62, f.doctor2.user_id, "2026-12-01T09:00:00Z", 30),
    );
    let touching = site_b.record(
        &f.receptionist,
        book(&f, 0x63, f.doctor.user_id, "2026-12-01T09:30:00Z", 30),
    );
    let mut central = f.world.store.clone();
    assert!(arrive(&mut central, first).is_empty());
    assert!(arrive(&mut central, other_doctor).is_empty());
    assert!(arrive(&mut central, touching).is_empty());
}

#[test]
fn a_reschedule_onto_a_slot_taken_meanwhile_needs_rescheduling() {
    let mut f = Fixture::new();
    let moved = f.book("2026-12-01T11:00:00Z", 30);
    let mut site_a = Site::offline_copy(&f.world, 1);
    let mut site_b = Site::offline_copy(&f.world, 2);
    let taken = site_a.record(
        &f.receptionist,
        book(&f, 0x61, f.doctor.user_id, "2026-12-01T09:00:00Z", 60),
    );
    let reschedule = site_b.record(
        &f.receptionist,
        RescheduleAppointment {
            appointment_id: moved,
            starts_at: at("2026-12-01T09:30:00Z"),
            duration_minutes: minutes(30),
        },
    );
    let mut central = f.world.store.clone();
    arrive(&mut central, taken);
    let answers = arrive(&mut central, reschedule);
    assert!(
        matches!(answers.as_slice(), [Event::AppointmentConflictDetected(e)] if e.appointment_id == moved)
    );
}

#[test]
fn dispensing_at_two_sites_past_zero_keeps_both_movements_and_flags_the_discrepancy() {
    let mut f = Fixture::new();
    f.stock("AMOX500", 10);
    let prescribe = |f: &mut Fixture, id: u128, quantity: i64| {
        let doctor = f.doctor.clone();
        f.world.ok(
            &doctor,
            IssuePrescription {
                prescription_id: PrescriptionId::from_uuid(uuid(id)),
                patient_id: f.patient,
                appointment_id: None,
                items: vec![PrescriptionItem {
                    drug_code: drug("AMOX500"),
                    name: name("Amoxicillin"),
                    dose: Dose::parse("500 mg").unwrap(),
                    quantity: qty(quantity),
                }],
            },
        );
    };
    prescribe(&mut f, 0x71, 8);
    prescribe(&mut f, 0x72, 5);
    let mut site_a = Site::offline_copy(&f.world, 1);
    let mut site_b = Site::offline_copy(&f.world, 2);
    let a = site_a.record(
        &f.pharmacist,
        DispensePrescription {
            prescription_id: PrescriptionId::from_uuid(uuid(0x71)),
        },
    );
    let b = site_b.record(
        &f.pharmacist,
        DispensePrescription {
            prescription_id: PrescriptionId::from_uuid(uuid(0x72)),
        },
    );
    let cause = b
        .iter()
        .find(|(e, _)| matches!(e, Event::StockDispensed(_)))
        .unwrap()
        .1
        .event_id;
    let mut central = f.world.store.clone();
    assert!(arrive(&mut central, a).is_empty());
    let answers = arrive(&mut central, b);
    let stock_item_id = StockItemId::for_drug(f.hospital_a, &drug("AMOX500"));
    assert_eq!(
        answers,
        vec![Event::from(StockDiscrepancyFlagged {
            stock_item_id,
            hospital_id: f.hospital_a,
            drug_code: drug("AMOX500"),
            balance: -3,
            cause_event_id: cause
        })]
    );
    let stock = central.stock_item(stock_item_id).unwrap();
    assert_eq!(
        (stock.balance, stock.discrepancies),
        (-3, 1),
        "both movements are kept"
    );
}

#[test]
fn a_claim_resubmitted_by_the_hospital_after_the_insurer_decided_is_answered_and_the_decision_stands()
 {
    let mut f = Fixture::new();
    let invoice = f.invoice(&[("CONSULT", 100_000)]);
    let claim_id = ClaimId::from_uuid(uuid(0x81));
    let submit = SubmitClaim {
        claim_id,
        invoice_id: invoice,
        plan_id: f.plan_x,
        member_id: MemberId::parse("M-1").unwrap(),
    };
    // A second site of the hospital submits the same claim offline, before it learns of the first.
    let mut offline = Site::offline_copy(&f.world, 2);
    let late = offline.record(&f.accountant, submit.clone());
    let accountant = f.accountant.clone();
    f.world.ok(&accountant, submit);
    let insurer = f.insurer_x_user.clone();
    f.world.ok(
        &insurer,
        ApproveClaim {
            claim_id,
            approved_cents: cents(70_000),
        },
    );
    let mut central = f.world.store.clone();
    let late_event_id = late[0].1.event_id;
    let answers = arrive(&mut central, late);
    assert_eq!(
        answers,
        vec![Event::from(ClaimAmendmentRejected {
            claim_id,
            hospital_id: f.hospital_a,
            insurer_id: f.insurer_x,
            rejected_event_id: late_event_id,
            rejected_event_type: "ClaimSubmitted".into(),
        })]
    );
    assert_eq!(
        central.claim(claim_id).unwrap().status,
        domain::claim::ClaimStatus::Approved {
            approved_cents: 70_000
        }
    );
}

fn register(id: u128, national: Option<&str>) -> RegisterPatient {
    RegisterPatient {
        patient_id: PatientId::from_uuid(uuid(id)),
        name: name("Amina Otieno"),
        birth_date: birth("1984-03-12"),
        sex: Sex::Female,
        national_id: national.map(|n| NationalId::parse(n).unwrap()),
        phone: None,
        region_code: None,
    }
}

#[test]
fn the_same_national_id_registered_at_another_site_is_a_suspected_duplicate() {
    let f = Fixture::new();
    let mut site = Site::offline_copy(&f.world, 2);
    let arriving = site.record(&f.receptionist, register(0x91, Some("KE-1001")));
    let mut central = f.world.store.clone();
    let answers = arrive(&mut central, arriving);
    assert_eq!(
        answers,
        vec![Event::from(DuplicatePatientSuspected {
            patient_id: PatientId::from_uuid(uuid(0x91)),
            hospital_id: f.hospital_a,
            existing_patient_id: f.patient,
            national_id: NationalId::parse("KE-1001").unwrap(),
        })]
    );
}

#[test]
fn another_national_id_or_none_is_no_duplicate() {
    let f = Fixture::new();
    let mut site = Site::offline_copy(&f.world, 2);
    let mut arriving = site.record(&f.receptionist, register(0x91, Some("KE-9999")));
    arriving.extend(site.record(&f.receptionist, register(0x92, None)));
    let mut central = f.world.store.clone();
    assert!(arrive(&mut central, arriving).is_empty());
}

#[test]
fn a_cancel_recorded_offline_after_the_appointment_was_completed_elsewhere_is_rejected() {
    let mut f = Fixture::new();
    let a = f.book("2026-12-01T09:00:00Z", 30);
    let doctor = f.doctor.clone();
    f.world.ok(
        &doctor,
        ApproveAppointment {
            appointment_id: a,
            reason: None,
        },
    );
    let mut offline = Site::offline_copy(&f.world, 2);
    let cancel = offline.record(
        &f.receptionist,
        CancelAppointment {
            appointment_id: a,
            reason: text("patient called"),
        },
    );
    f.world.ok(
        &doctor,
        CompleteAppointment {
            appointment_id: a,
            summary: None,
        },
    );
    let mut central = f.world.store.clone();
    let cancel_id = cancel[0].1.event_id;
    let answers = arrive(&mut central, cancel);
    assert_eq!(
        answers,
        vec![Event::from(TransitionRejected {
            aggregate_type: AggregateType::Appointment,
            aggregate_id: a.as_uuid(),
            org_id: f.hospital_a.into(),
            rejected_event_id: cancel_id,
            rejected_event_type: "AppointmentCancelled".into(),
            reason: "appointment was already completed".into(),
        })]
    );
    assert_eq!(
        central.appointment(a).unwrap().status,
        domain::appointment::AppointmentStatus::Completed
    );
}

#[test]
fn a_lab_result_recorded_at_two_sites_keeps_the_first_and_rejects_the_second() {
    let mut f = Fixture::new();
    let order = LabOrderId::from_uuid(uuid(0xA1));
    let doctor = f.doctor.clone();
    f.world.ok(
        &doctor,
        OrderLabTest {
            lab_order_id: order,
            patient_id: f.patient,
            test_code: TestCode::parse("CBC").unwrap(),
            appointment_id: None,
        },
    );
    let mut site_a = Site::offline_copy(&f.world, 1);
    let mut site_b = Site::offline_copy(&f.world, 2);
    let a = site_a.record(
        &f.lab_tech,
        RecordLabResult {
            lab_order_id: order,
            result: long("Hb 13.1"),
            abnormal: false,
        },
    );
    let b = site_b.record(
        &f.lab_tech,
        RecordLabResult {
            lab_order_id: order,
            result: long("Hb 9.0"),
            abnormal: true,
        },
    );
    let mut central = f.world.store.clone();
    assert!(arrive(&mut central, a).is_empty());
    let answers = arrive(&mut central, b);
    assert!(
        matches!(answers.as_slice(), [Event::TransitionRejected(t)] if t.rejected_event_type == "LabResultRecorded")
    );
    assert_eq!(
        central.lab_order(order).unwrap().result.unwrap().result,
        long("Hb 13.1")
    );
}

#[test]
fn patient_details_edited_at_two_sites_merge_per_field_with_the_later_edit_winning_whatever_the_arrival_order()
 {
    let f = Fixture::new();
    let mut early = Site::offline_copy(&f.world, 1);
    let mut late = Site::offline_copy(&f.world, 2);
    early.now = at("2026-11-24T09:00:00Z");
    late.now = at("2026-11-24T10:00:00Z");
    let phone = |n: &str| PatientChanges {
        phone: Some(Phone::parse(n).unwrap()),
        ..Default::default()
    };
    let early_edit = early.record(
        &f.nurse,
        UpdatePatientDetails {
            patient_id: f.patient,
            changes: PatientChanges {
                region_code: Some(region("KE-47")),
                ..phone("+254700000001")
            },
        },
    );
    let late_edit = late.record(
        &f.nurse,
        UpdatePatientDetails {
            patient_id: f.patient,
            changes: phone("+254700000002"),
        },
    );
    for order in [
        vec![early_edit.clone(), late_edit.clone()],
        vec![late_edit, early_edit],
    ] {
        let mut central = f.world.store.clone();
        for arriving in order {
            assert!(
                arrive(&mut central, arriving).is_empty(),
                "a details merge needs no answering event"
            );
        }
        let details = central.patient(f.patient).unwrap().details;
        assert_eq!(
            details.phone,
            Some(Phone::parse("+254700000002").unwrap()),
            "the later edit of the phone wins"
        );
        assert_eq!(
            details.region_code,
            Some(region("KE-47")),
            "a field only one site changed keeps that change"
        );
    }
}

#[test]
fn edits_at_the_same_instant_are_settled_by_the_higher_node_id_whatever_the_arrival_order() {
    let f = Fixture::new();
    let mut low = Site::offline_copy(&f.world, 1);
    let mut high = Site::offline_copy(&f.world, 2);
    low.now = at("2026-11-24T09:00:00Z");
    high.now = low.now;
    let phone = |n: &str| PatientChanges {
        phone: Some(Phone::parse(n).unwrap()),
        ..Default::default()
    };
    let low_edit = low.record(
        &f.nurse,
        UpdatePatientDetails {
            patient_id: f.patient,
            changes: phone("+254700000001"),
        },
    );
    let high_edit = high.record(
        &f.nurse,
        UpdatePatientDetails {
            patient_id: f.patient,
            changes: phone("+254700000002"),
        },
    );
    assert!(high.node > low.node);
    for order in [
        vec![low_edit.clone(), high_edit.clone()],
        vec![high_edit, low_edit],
    ] {
        let mut central = f.world.store.clone();
        for arriving in order {
            arrive(&mut central, arriving);
        }
        assert_eq!(
            central.patient(f.patient).unwrap().details.phone,
            Some(Phone::parse("+254700000002").unwrap())
        );
    }
}

#[test]
fn answers_are_never_answered() {
    let f = Fixture::new();
    let central = f.world.store.clone();
    let conflict: Event = AppointmentConflictDetected {
        appointment_id: AppointmentId::from_uuid(uuid(1)),
        hospital_id: f.hospital_a,
        doctor_id: f.doctor.user_id,
        conflicting_appointment_id: AppointmentId::from_uuid(uuid(2)),
        starts_at: at("2026-12-01T09:00:00Z"),
        ends_at: at("2026-12-01T09:30:00Z"),
    }
    .into();
    let stamp = Stamp {
        event_id: EventId::from_uuid(uuid(3)),
        occurred_at: at("2026-12-01T09:00:00Z"),
        node_id: NodeId::from_uuid(uuid(4)),
    };
    assert!(answer(&central, &conflict, &stamp).is_empty());
}

#[test]
fn every_answer_type_is_an_event_type() {
    for name in domain::conflict::ANSWER_EVENT_TYPES {
        assert!(domain::event::Event::TYPES.contains(&name), "{name}");
    }
}
