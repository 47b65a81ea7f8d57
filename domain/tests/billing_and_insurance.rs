//! Billing and insurance: invoices and their payments, claims priced by a plan, plans and their
//! terms, and the insurer's decision on a claim.
mod support;

use domain::Facts;
use domain::claim::ClaimStatus;
use domain::command::*;
use domain::event::*;
use domain::invoice::InvoiceStatus;
use domain::values::*;
use support::*;

fn line(code: &str, amount: i64) -> InvoiceLine {
    InvoiceLine {
        service_code: service(code),
        description: text("service"),
        amount_cents: cents(amount),
    }
}

fn term(code: &str, percent: i64, cap: i64) -> CoverageTerm {
    CoverageTerm {
        service_code: service(code),
        percent: Percent::new(percent).unwrap(),
        cap_cents: cents(cap),
    }
}

fn member() -> MemberId {
    MemberId::parse("AFYA-0042").unwrap()
}

fn premium(n: i64) -> NonNegativeCents {
    NonNegativeCents::new(n).unwrap()
}

/// An invoice of the fixture's patient, in shillings, with these lines.
fn issue(f: &mut Fixture, lines: Vec<InvoiceLine>) -> IssueInvoice {
    IssueInvoice {
        invoice_id: InvoiceId::from_uuid(f.id()),
        patient_id: f.patient,
        appointment_id: None,
        currency: kes(),
        lines,
    }
}

fn pay(invoice_id: InvoiceId, amount: i64) -> RecordPayment {
    RecordPayment {
        invoice_id,
        amount_cents: cents(amount),
        method: PaymentMethod::MobileMoney,
    }
}

/// A claim of the invoice against plan X.
fn claim_on(f: &mut Fixture, invoice_id: InvoiceId) -> SubmitClaim {
    SubmitClaim {
        claim_id: ClaimId::from_uuid(f.id()),
        invoice_id,
        plan_id: f.plan_x,
        member_id: member(),
    }
}

/// The covered lines of a claim the accountant submits on plan X for an invoice of these lines.
fn priced(f: &mut Fixture, lines: &[(&str, i64)]) -> (i64, Vec<ClaimLine>) {
    let invoice = f.invoice(lines);
    let submit = claim_on(f, invoice);
    let events = f.world.ok(&f.accountant, submit);
    match &events[..] {
        [Event::ClaimSubmitted(e)] => (e.claimed_cents, e.lines.clone()),
        other => panic!("expected one ClaimSubmitted, got {other:?}"),
    }
}

fn claim_line(code: &str, billed: i64, covered: i64) -> ClaimLine {
    ClaimLine {
        service_code: service(code),
        amount_cents: billed,
        covered_cents: covered,
    }
}

/// A claim on plan X for a consultation of 100 000 (80 000 covered), submitted.
fn submitted_claim(f: &mut Fixture) -> ClaimId {
    let invoice = f.invoice(&[("CONSULT", 100_000)]);
    let submit = claim_on(f, invoice);
    let id = submit.claim_id;
    f.world.ok(&f.accountant, submit);
    id
}

fn approve(claim_id: ClaimId, amount: i64) -> ApproveClaim {
    ApproveClaim {
        claim_id,
        approved_cents: cents(amount),
    }
}

fn reject(claim_id: ClaimId) -> RejectClaim {
    RejectClaim {
        claim_id,
        reason: text("not a member on the date of service"),
    }
}

// --- IssueInvoice ----------------------------------------------------------------------

#[test]
fn an_accountant_issues_an_invoice_with_its_total() {
    let mut f = Fixture::new();
    let command = issue(&mut f, vec![line("CONSULT", 150_000), line("LAB", 45_050)]);
    f.world.then(
        &f.accountant,
        command.clone(),
        vec![
            InvoiceIssued {
                invoice_id: command.invoice_id,
                hospital_id: f.hospital_a,
                patient_id: f.patient,
                appointment_id: None,
                currency: kes(),
                lines: vec![line("CONSULT", 150_000), line("LAB", 45_050)],
                total_cents: 195_050,
            }
            .into(),
        ],
    );
}

#[test]
fn a_receptionist_issues_an_invoice_for_an_appointment() {
    let mut f = Fixture::new();
    let appointment = f.book("2026-11-24T09:00:00Z", 30);
    let mut command = issue(&mut f, vec![line("CONSULT", 150_000)]);
    command.appointment_id = Some(appointment);
    f.world.then(
        &f.receptionist,
        command.clone(),
        vec![
            InvoiceIssued {
                invoice_id: command.invoice_id,
                hospital_id: f.hospital_a,
                patient_id: f.patient,
                appointment_id: Some(appointment),
                currency: kes(),
                lines: vec![line("CONSULT", 150_000)],
                total_cents: 150_000,
            }
            .into(),
        ],
    );
}

#[test]
fn a_new_invoice_is_open_with_nothing_paid() {
    let mut f = Fixture::new();
    let invoice = f.invoice(&[("CONSULT", 150_000)]);
    let state = f.world.store.invoice(invoice).unwrap();
    assert_eq!(state.status(), InvoiceStatus::Open);
    assert_eq!(state.outstanding_cents(), 150_000);
}

#[test]
fn a_doctor_cannot_issue_an_invoice() {
    let mut f = Fixture::new();
    let command = issue(&mut f, vec![line("CONSULT", 150_000)]);
    f.world.then_refused(&f.doctor, command, Refused::Forbidden);
}

#[test]
fn staff_of_another_hospital_cannot_invoice_a_patient_of_hospital_a() {
    let mut f = Fixture::new();
    let command = issue(&mut f, vec![line("CONSULT", 150_000)]);
    f.world
        .then_refused(&f.b_accountant, command, Refused::Forbidden);
}

#[test]
fn an_invoice_for_an_unknown_patient_is_not_found() {
    let mut f = Fixture::new();
    let mut command = issue(&mut f, vec![line("CONSULT", 150_000)]);
    command.patient_id = PatientId::from_uuid(f.id());
    f.world.then_refused(
        &f.accountant,
        command,
        Refused::NotFound(AggregateType::Patient),
    );
}

#[test]
fn a_merged_patient_cannot_be_invoiced() {
    let mut f = Fixture::new();
    let merge = MergePatients {
        surviving_patient_id: f.other_patient,
        merged_patient_id: f.patient,
    };
    f.world.ok(&f.admin, merge);
    let command = issue(&mut f, vec![line("CONSULT", 150_000)]);
    f.world
        .then_refused(&f.accountant, command, Refused::Conflict);
}

#[test]
fn an_invoice_id_cannot_be_used_twice() {
    let mut f = Fixture::new();
    let command = issue(&mut f, vec![line("CONSULT", 150_000)]);
    f.world.ok(&f.accountant, command.clone());
    f.world
        .then_refused(&f.receptionist, command, Refused::Conflict);
}

#[test]
fn an_invoice_needs_at_least_one_line() {
    let mut f = Fixture::new();
    let command = issue(&mut f, vec![]);
    f.world
        .then_refused(&f.accountant, command, Refused::Invalid("lines"));
}

#[test]
fn an_invoice_of_more_than_a_hundred_lines_is_refused() {
    let mut f = Fixture::new();
    let command = issue(&mut f, vec![line("LAB", 1_000); 101]);
    f.world
        .then_refused(&f.accountant, command, Refused::Invalid("lines"));
}

#[test]
fn an_invoice_totalling_more_than_the_largest_amount_is_refused() {
    let mut f = Fixture::new();
    let command = issue(&mut f, vec![line("SURGERY", MAX_CENTS), line("LAB", 1)]);
    f.world
        .then_refused(&f.accountant, command, Refused::Invalid("lines"));
}

#[test]
fn an_invoice_for_an_unknown_appointment_is_not_found() {
    let mut f = Fixture::new();
    let mut command = issue(&mut f, vec![line("CONSULT", 150_000)]);
    command.appointment_id = Some(AppointmentId::from_uuid(f.id()));
    f.world.then_refused(
        &f.accountant,
        command,
        Refused::NotFound(AggregateType::Appointment),
    );
}

#[test]
fn an_invoice_cannot_name_an_appointment_of_another_patient() {
    let mut f = Fixture::new();
    let appointment = f.book("2026-11-24T09:00:00Z", 30);
    let mut command = issue(&mut f, vec![line("CONSULT", 150_000)]);
    command.patient_id = f.other_patient;
    command.appointment_id = Some(appointment);
    f.world
        .then_refused(&f.accountant, command, Refused::Invalid("appointment_id"));
}

// --- RecordPayment ---------------------------------------------------------------------

#[test]
fn a_receptionist_records_a_payment() {
    let mut f = Fixture::new();
    let invoice = f.invoice(&[("CONSULT", 150_000)]);
    f.world.then(
        &f.receptionist,
        pay(invoice, 50_000),
        vec![
            PaymentRecorded {
                invoice_id: invoice,
                hospital_id: f.hospital_a,
                amount_cents: cents(50_000),
                method: PaymentMethod::MobileMoney,
            }
            .into(),
        ],
    );
}

#[test]
fn partial_payments_take_an_invoice_from_open_to_partially_paid_to_paid() {
    let mut f = Fixture::new();
    let invoice = f.invoice(&[("CONSULT", 100_000), ("LAB", 50_000)]);
    let status = |f: &Fixture| {
        let state = f.world.store.invoice(invoice).unwrap();
        (state.status(), state.outstanding_cents())
    };

    f.world.ok(&f.accountant, pay(invoice, 60_000));
    assert_eq!(status(&f), (InvoiceStatus::PartiallyPaid, 90_000));

    f.world.ok(&f.accountant, pay(invoice, 40_000));
    assert_eq!(status(&f), (InvoiceStatus::PartiallyPaid, 50_000));

    f.world.ok(&f.accountant, pay(invoice, 50_000));
    assert_eq!(status(&f), (InvoiceStatus::Paid, 0));
}

#[test]
fn a_payment_above_the_outstanding_amount_is_refused() {
    let mut f = Fixture::new();
    let invoice = f.invoice(&[("CONSULT", 100_000)]);
    f.world.ok(&f.accountant, pay(invoice, 60_000));
    f.world
        .then_refused(&f.accountant, pay(invoice, 40_001), Refused::Conflict);
}

#[test]
fn a_paid_invoice_takes_no_more_payments() {
    let mut f = Fixture::new();
    let invoice = f.invoice(&[("CONSULT", 100_000)]);
    f.world.ok(&f.accountant, pay(invoice, 100_000));
    f.world
        .then_refused(&f.accountant, pay(invoice, 1), Refused::Conflict);
}

#[test]
fn staff_of_another_hospital_cannot_record_a_payment_on_hospital_as_invoice() {
    let mut f = Fixture::new();
    let invoice = f.invoice(&[("CONSULT", 100_000)]);
    f.world
        .then_refused(&f.b_accountant, pay(invoice, 10_000), Refused::Forbidden);
}

#[test]
fn a_nurse_cannot_record_a_payment() {
    let mut f = Fixture::new();
    let invoice = f.invoice(&[("CONSULT", 100_000)]);
    f.world
        .then_refused(&f.nurse, pay(invoice, 10_000), Refused::Forbidden);
}

#[test]
fn a_payment_on_an_unknown_invoice_is_not_found() {
    let mut f = Fixture::new();
    let unknown = InvoiceId::from_uuid(f.id());
    f.world.then_refused(
        &f.accountant,
        pay(unknown, 10_000),
        Refused::NotFound(AggregateType::Invoice),
    );
}

// --- SubmitClaim -----------------------------------------------------------------------

#[test]
fn an_accountant_submits_a_claim_priced_by_the_plan() {
    let mut f = Fixture::new();
    let invoice = f.invoice(&[("CONSULT", 100_000), ("LAB", 30_000)]);
    let submit = claim_on(&mut f, invoice);
    f.world.then(
        &f.accountant,
        submit.clone(),
        vec![
            ClaimSubmitted {
                claim_id: submit.claim_id,
                hospital_id: f.hospital_a,
                insurer_id: f.insurer_x,
                plan_id: f.plan_x,
                invoice_id: invoice,
                patient_id: f.patient,
                member_id: member(),
                currency: kes(),
                claimed_cents: 110_000,
                lines: vec![
                    claim_line("CONSULT", 100_000, 80_000),
                    claim_line("LAB", 30_000, 30_000),
                ],
            }
            .into(),
        ],
    );
}

#[test]
fn a_claim_belongs_to_the_hospital_and_is_decided_by_the_plans_insurer() {
    let mut f = Fixture::new();
    let plan_y = PlanId::from_uuid(f.id());
    let publish = PublishPlan {
        plan_id: plan_y,
        insurer_id: f.insurer_y,
        name: name("Bima Basic"),
        currency: kes(),
        premium_cents: premium(90_000),
        coverage: vec![term("CONSULT", 50, 1_000_000)],
    };
    f.world.ok(&f.insurer_y_user, publish);
    let invoice = f.invoice(&[("CONSULT", 100_000)]);
    let submit = SubmitClaim {
        plan_id: plan_y,
        ..claim_on(&mut f, invoice)
    };

    let events = f.world.ok(&f.accountant, submit.clone());

    assert_eq!(events[0].org_id(), OrgId::from(f.hospital_a));
    let claim = f.world.store.claim(submit.claim_id).unwrap();
    assert_eq!(claim.hospital_id, f.hospital_a);
    assert_eq!(claim.insurer_id, f.insurer_y);
    assert_eq!(claim.claimed_cents, 50_000);
    assert_eq!(claim.status, ClaimStatus::Submitted);
}

#[test]
fn a_service_is_covered_at_its_percentage_up_to_its_cap() {
    let mut f = Fixture::new();
    // Plan X: consultations 80 % up to 400 000, lab work 100 % up to 100 000.
    let (claimed, lines) = priced(&mut f, &[("CONSULT", 450_000), ("LAB", 250_000)]);
    assert_eq!(
        lines,
        vec![
            claim_line("CONSULT", 450_000, 360_000),
            claim_line("LAB", 250_000, 100_000),
        ]
    );
    assert_eq!(claimed, 460_000);
}

#[test]
fn lines_of_one_service_are_added_up_before_the_cap_applies() {
    let mut f = Fixture::new();
    // Each line alone is under the cap (240 000 covered); together (480 000) they are over it.
    let (claimed, lines) = priced(&mut f, &[("CONSULT", 300_000), ("CONSULT", 300_000)]);
    assert_eq!(lines, vec![claim_line("CONSULT", 600_000, 400_000)]);
    assert_eq!(claimed, 400_000);
}

#[test]
fn a_service_the_plan_does_not_cover_is_claimed_at_nothing() {
    let mut f = Fixture::new();
    let (claimed, lines) = priced(&mut f, &[("XRAY-CHEST", 70_000), ("LAB", 20_000)]);
    assert_eq!(
        lines,
        vec![
            claim_line("XRAY-CHEST", 70_000, 0),
            claim_line("LAB", 20_000, 20_000),
        ]
    );
    assert_eq!(claimed, 20_000);
}

#[test]
fn a_receptionist_cannot_submit_a_claim() {
    let mut f = Fixture::new();
    let invoice = f.invoice(&[("CONSULT", 100_000)]);
    let submit = claim_on(&mut f, invoice);
    f.world
        .then_refused(&f.receptionist, submit, Refused::Forbidden);
}

#[test]
fn an_accountant_cannot_claim_an_invoice_of_another_hospital() {
    let mut f = Fixture::new();
    let invoice = f.invoice(&[("CONSULT", 100_000)]);
    let submit = claim_on(&mut f, invoice);
    f.world
        .then_refused(&f.b_accountant, submit, Refused::Forbidden);
}

#[test]
fn a_claim_on_an_unknown_invoice_is_not_found() {
    let mut f = Fixture::new();
    let unknown = InvoiceId::from_uuid(f.id());
    let submit = claim_on(&mut f, unknown);
    f.world.then_refused(
        &f.accountant,
        submit,
        Refused::NotFound(AggregateType::Invoice),
    );
}

#[test]
fn a_claim_against_an_unknown_plan_is_not_found() {
    let mut f = Fixture::new();
    let invoice = f.invoice(&[("CONSULT", 100_000)]);
    let submit = SubmitClaim {
        plan_id: PlanId::from_uuid(f.id()),
        ..claim_on(&mut f, invoice)
    };
    f.world.then_refused(
        &f.accountant,
        submit,
        Refused::NotFound(AggregateType::Plan),
    );
}

#[test]
fn a_claim_id_cannot_be_used_twice() {
    let mut f = Fixture::new();
    let invoice = f.invoice(&[("CONSULT", 100_000)]);
    let submit = claim_on(&mut f, invoice);
    f.world.ok(&f.accountant, submit.clone());
    f.world
        .then_refused(&f.accountant, submit, Refused::Conflict);
}

#[test]
fn an_invoice_in_another_currency_than_the_plan_cannot_be_claimed() {
    let mut f = Fixture::new();
    let mut command = issue(&mut f, vec![line("CONSULT", 100_000)]);
    command.currency = Currency::parse("EUR").unwrap();
    let invoice = command.invoice_id;
    f.world.ok(&f.accountant, command);
    let submit = claim_on(&mut f, invoice);
    f.world
        .then_refused(&f.accountant, submit, Refused::Conflict);
}

#[test]
fn an_invoice_the_plan_covers_nothing_of_cannot_be_claimed() {
    let mut f = Fixture::new();
    let invoice = f.invoice(&[("XRAY-CHEST", 70_000), ("PHYSIO", 30_000)]);
    let submit = claim_on(&mut f, invoice);
    f.world
        .then_refused(&f.accountant, submit, Refused::Conflict);
}

// --- PublishPlan -----------------------------------------------------------------------

/// A new plan of insurer X with this coverage.
fn new_plan(f: &mut Fixture, coverage: Vec<CoverageTerm>) -> PublishPlan {
    PublishPlan {
        plan_id: PlanId::from_uuid(f.id()),
        insurer_id: f.insurer_x,
        name: name("Afya Silver"),
        currency: kes(),
        premium_cents: premium(120_000),
        coverage,
    }
}

#[test]
fn an_insurer_publishes_a_plan() {
    let mut f = Fixture::new();
    let publish = new_plan(&mut f, vec![term("CONSULT", 70, 200_000)]);
    f.world.then(
        &f.insurer_x_user,
        publish.clone(),
        vec![
            PlanPublished {
                plan_id: publish.plan_id,
                insurer_id: f.insurer_x,
                name: name("Afya Silver"),
                currency: kes(),
                premium_cents: premium(120_000),
                coverage: vec![term("CONSULT", 70, 200_000)],
            }
            .into(),
        ],
    );
}

#[test]
fn an_insurer_cannot_publish_a_plan_for_another_insurer() {
    let mut f = Fixture::new();
    let publish = new_plan(&mut f, vec![term("CONSULT", 70, 200_000)]);
    f.world
        .then_refused(&f.insurer_y_user, publish, Refused::Forbidden);
}

#[test]
fn an_accountant_cannot_publish_a_plan() {
    let mut f = Fixture::new();
    let publish = new_plan(&mut f, vec![term("CONSULT", 70, 200_000)]);
    f.world
        .then_refused(&f.accountant, publish, Refused::Forbidden);
}

#[test]
fn a_plan_of_an_unregistered_insurer_is_not_found() {
    let mut f = Fixture::new();
    let unregistered = InsurerId::from_uuid(f.id());
    let someone = actor(UserId::from_uuid(f.id()), unregistered, &[Role::Insurer]);
    let publish = PublishPlan {
        insurer_id: unregistered,
        ..new_plan(&mut f, vec![term("CONSULT", 70, 200_000)])
    };
    f.world
        .then_refused(&someone, publish, Refused::NotFound(AggregateType::Insurer));
}

#[test]
fn a_plan_id_cannot_be_used_twice() {
    let mut f = Fixture::new();
    let mut publish = new_plan(&mut f, vec![term("CONSULT", 70, 200_000)]);
    publish.plan_id = f.plan_x;
    f.world
        .then_refused(&f.insurer_x_user, publish, Refused::Conflict);
}

#[test]
fn a_plan_must_cover_at_least_one_service() {
    let mut f = Fixture::new();
    let publish = new_plan(&mut f, vec![]);
    f.world
        .then_refused(&f.insurer_x_user, publish, Refused::Invalid("coverage"));
}

#[test]
fn a_plan_of_more_than_two_hundred_terms_is_refused() {
    let mut f = Fixture::new();
    let coverage = (0..201)
        .map(|i| term(&format!("SVC-{i}"), 50, 10_000))
        .collect();
    let publish = new_plan(&mut f, coverage);
    f.world
        .then_refused(&f.insurer_x_user, publish, Refused::Invalid("coverage"));
}

#[test]
fn a_plan_cannot_list_a_service_twice() {
    let mut f = Fixture::new();
    let coverage = vec![term("CONSULT", 70, 200_000), term("CONSULT", 90, 500_000)];
    let publish = new_plan(&mut f, coverage);
    f.world.then_refused(
        &f.insurer_x_user,
        publish,
        Refused::Invalid("coverage[1].service_code"),
    );
}

// --- UpdatePlanTerms -------------------------------------------------------------------

fn new_terms(
    plan_id: PlanId,
    premium_cents: Option<i64>,
    coverage: Option<Vec<CoverageTerm>>,
) -> UpdatePlanTerms {
    UpdatePlanTerms {
        plan_id,
        premium_cents: premium_cents.map(premium),
        coverage,
    }
}

/// Plan X's coverage as the fixture publishes it.
fn plan_x_coverage() -> Vec<CoverageTerm> {
    vec![term("CONSULT", 80, 400_000), term("LAB", 100, 100_000)]
}

#[test]
fn an_insurer_raises_the_premium_of_its_plan() {
    let f = Fixture::new();
    f.world.then(
        &f.insurer_x_user,
        new_terms(f.plan_x, Some(300_000), None),
        vec![
            PlanTermsUpdated {
                plan_id: f.plan_x,
                insurer_id: f.insurer_x,
                premium_cents: Some(premium(300_000)),
                coverage: None,
            }
            .into(),
        ],
    );
}

#[test]
fn only_the_terms_that_change_are_recorded() {
    let f = Fixture::new();
    let coverage = vec![term("CONSULT", 60, 400_000)];
    f.world.then(
        &f.insurer_x_user,
        // 250 000 is the premium plan X already has.
        new_terms(f.plan_x, Some(250_000), Some(coverage.clone())),
        vec![
            PlanTermsUpdated {
                plan_id: f.plan_x,
                insurer_id: f.insurer_x,
                premium_cents: None,
                coverage: Some(coverage),
            }
            .into(),
        ],
    );
}

#[test]
fn new_terms_price_later_claims_while_earlier_claims_keep_theirs() {
    let mut f = Fixture::new();
    let earlier = submitted_claim(&mut f);
    let coverage = vec![term("CONSULT", 50, 400_000)];
    let update = new_terms(f.plan_x, None, Some(coverage.clone()));
    f.world.ok(&f.insurer_x_user, update);
    assert_eq!(f.world.store.plan(f.plan_x).unwrap().coverage, coverage);

    let later = submitted_claim(&mut f);

    let claimed = |id| f.world.store.claim(id).unwrap().claimed_cents;
    assert_eq!(claimed(earlier), 80_000);
    assert_eq!(claimed(later), 50_000);
}

#[test]
fn terms_that_change_nothing_are_refused() {
    let f = Fixture::new();
    f.world.then_refused(
        &f.insurer_x_user,
        new_terms(f.plan_x, Some(250_000), Some(plan_x_coverage())),
        Refused::Conflict,
    );
}

#[test]
fn an_insurer_cannot_change_another_insurers_plan() {
    let f = Fixture::new();
    f.world.then_refused(
        &f.insurer_y_user,
        new_terms(f.plan_x, Some(1), None),
        Refused::Forbidden,
    );
}

#[test]
fn a_doctor_cannot_change_plan_terms() {
    let f = Fixture::new();
    f.world.then_refused(
        &f.doctor,
        new_terms(f.plan_x, Some(1), None),
        Refused::Forbidden,
    );
}

#[test]
fn changing_the_terms_of_an_unknown_plan_is_not_found() {
    let mut f = Fixture::new();
    let unknown = PlanId::from_uuid(f.id());
    f.world.then_refused(
        &f.insurer_x_user,
        new_terms(unknown, Some(1), None),
        Refused::NotFound(AggregateType::Plan),
    );
}

#[test]
fn new_coverage_must_list_at_least_one_service() {
    let f = Fixture::new();
    f.world.then_refused(
        &f.insurer_x_user,
        new_terms(f.plan_x, None, Some(vec![])),
        Refused::Invalid("coverage"),
    );
}

#[test]
fn new_coverage_cannot_list_a_service_twice() {
    let f = Fixture::new();
    let coverage = vec![
        term("CONSULT", 80, 400_000),
        term("LAB", 100, 100_000),
        term("LAB", 50, 100_000),
    ];
    f.world.then_refused(
        &f.insurer_x_user,
        new_terms(f.plan_x, None, Some(coverage)),
        Refused::Invalid("coverage[2].service_code"),
    );
}

// --- ApproveClaim ----------------------------------------------------------------------

#[test]
fn the_plans_insurer_approves_a_claim() {
    let mut f = Fixture::new();
    let claim = submitted_claim(&mut f);
    f.world.then(
        &f.insurer_x_user,
        approve(claim, 80_000),
        vec![
            ClaimApproved {
                claim_id: claim,
                hospital_id: f.hospital_a,
                insurer_id: f.insurer_x,
                approved_cents: 80_000,
                decided_by: f.insurer_x_user.user_id,
            }
            .into(),
        ],
    );
}

#[test]
fn an_insurer_may_approve_less_than_was_claimed() {
    let mut f = Fixture::new();
    let claim = submitted_claim(&mut f);
    f.world.ok(&f.insurer_x_user, approve(claim, 65_000));
    let state = f.world.store.claim(claim).unwrap();
    assert_eq!(
        state.status,
        ClaimStatus::Approved {
            approved_cents: 65_000
        }
    );
    assert_eq!(state.claimed_cents, 80_000);
}

#[test]
fn approving_more_than_was_claimed_is_refused() {
    let mut f = Fixture::new();
    let claim = submitted_claim(&mut f);
    f.world.then_refused(
        &f.insurer_x_user,
        approve(claim, 80_001),
        Refused::Invalid("approved_cents"),
    );
}

#[test]
fn an_insurer_cannot_decide_a_claim_on_another_insurers_plan() {
    let mut f = Fixture::new();
    let claim = submitted_claim(&mut f);
    f.world.then_refused(
        &f.insurer_y_user,
        approve(claim, 80_000),
        Refused::Forbidden,
    );
}

#[test]
fn an_accountant_cannot_approve_a_claim() {
    let mut f = Fixture::new();
    let claim = submitted_claim(&mut f);
    f.world
        .then_refused(&f.accountant, approve(claim, 80_000), Refused::Forbidden);
}

#[test]
fn approving_an_unknown_claim_is_not_found() {
    let mut f = Fixture::new();
    let unknown = ClaimId::from_uuid(f.id());
    f.world.then_refused(
        &f.insurer_x_user,
        approve(unknown, 80_000),
        Refused::NotFound(AggregateType::Claim),
    );
}

#[test]
fn an_approved_claim_cannot_be_approved_again() {
    let mut f = Fixture::new();
    let claim = submitted_claim(&mut f);
    f.world.ok(&f.insurer_x_user, approve(claim, 60_000));
    f.world
        .then_refused(&f.insurer_x_user, approve(claim, 80_000), Refused::Conflict);
}

#[test]
fn a_rejected_claim_cannot_be_approved() {
    let mut f = Fixture::new();
    let claim = submitted_claim(&mut f);
    f.world.ok(&f.insurer_x_user, reject(claim));
    f.world
        .then_refused(&f.insurer_x_user, approve(claim, 80_000), Refused::Conflict);
}

// --- RejectClaim -----------------------------------------------------------------------

#[test]
fn the_plans_insurer_rejects_a_claim() {
    let mut f = Fixture::new();
    let claim = submitted_claim(&mut f);
    f.world.then(
        &f.insurer_x_user,
        reject(claim),
        vec![
            ClaimRejected {
                claim_id: claim,
                hospital_id: f.hospital_a,
                insurer_id: f.insurer_x,
                reason: text("not a member on the date of service"),
                decided_by: f.insurer_x_user.user_id,
            }
            .into(),
        ],
    );
}

#[test]
fn a_rejected_claim_keeps_the_reason() {
    let mut f = Fixture::new();
    let claim = submitted_claim(&mut f);
    f.world.ok(&f.insurer_x_user, reject(claim));
    assert_eq!(
        f.world.store.claim(claim).unwrap().status,
        ClaimStatus::Rejected {
            reason: text("not a member on the date of service")
        }
    );
}

#[test]
fn an_insurer_cannot_reject_a_claim_on_another_insurers_plan() {
    let mut f = Fixture::new();
    let claim = submitted_claim(&mut f);
    f.world
        .then_refused(&f.insurer_y_user, reject(claim), Refused::Forbidden);
}

#[test]
fn an_accountant_cannot_reject_a_claim() {
    let mut f = Fixture::new();
    let claim = submitted_claim(&mut f);
    f.world
        .then_refused(&f.accountant, reject(claim), Refused::Forbidden);
}

#[test]
fn rejecting_an_unknown_claim_is_not_found() {
    let mut f = Fixture::new();
    let unknown = ClaimId::from_uuid(f.id());
    f.world.then_refused(
        &f.insurer_x_user,
        reject(unknown),
        Refused::NotFound(AggregateType::Claim),
    );
}

#[test]
fn an_approved_claim_cannot_be_rejected() {
    let mut f = Fixture::new();
    let claim = submitted_claim(&mut f);
    f.world.ok(&f.insurer_x_user, approve(claim, 80_000));
    f.world
        .then_refused(&f.insurer_x_user, reject(claim), Refused::Conflict);
}

#[test]
fn the_same_coverage_in_another_order_is_no_change_to_a_plan() {
    let f = Fixture::new();
    let mut coverage = f.world.store.plan(f.plan_x).unwrap().coverage;
    coverage.reverse();
    f.world.then_refused(
        &f.insurer_x_user,
        UpdatePlanTerms {
            plan_id: f.plan_x,
            premium_cents: None,
            coverage: Some(coverage),
        },
        Refused::Conflict,
    );
}
