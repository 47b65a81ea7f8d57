//! The reconciler against real NATS: two offline sites send facts that clash, and each clash
//! of ARCHITECTURE.md's table is answered once, also across a restart of the service.

mod support;

use domain::event::*;
use domain::values::*;
// A site recording events the way an edge does (its own chain, signed), for publishing
// straight into the stream: what two offline sites send when they reconnect.
use command_service::testing::Node as Site;
use support::*;
use uuid::Uuid;

fn at(s: &str) -> Timestamp {
    Timestamp::new(s.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_clash_of_two_offline_sites_is_answered_once() {
    let service = Service::unstarted(&nats_url(), &prefix());
    let config = service.config();
    clashes_are_answered_once(service, config).await;
}

/// With a cache of one state, the reconciler reads the stock item, the closed appointment, the
/// patients and the claim again from the stream to judge the clashes on them: the answers are
/// the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clashes_on_states_the_cache_evicted_are_judged_on_them_read_again() {
    let service = Service::unstarted(&nats_url(), &prefix());
    let mut config = service.config();
    config.state_cache = 1;
    clashes_are_answered_once(service, config).await;
}

async fn clashes_are_answered_once(mut service: Service, config: command_service::Config) {
    service.start_with(config.clone()).await;
    let h = HospitalId::from_uuid(Uuid::now_v7());
    let (mut a, mut b) = (Site::new(Role::Doctor), Site::new(Role::Doctor));
    let doctor = UserId::from_uuid(Uuid::now_v7());
    let patient = PatientId::from_uuid(Uuid::now_v7());
    let booked = |id: AppointmentId, starts: &str| AppointmentBooked {
        appointment_id: id,
        hospital_id: h,
        patient_id: patient,
        doctor_id: doctor,
        starts_at: at(starts),
        duration_minutes: DurationMinutes::new(30).unwrap(),
        reason: ShortText::parse("check-up").unwrap(),
        booked_by: doctor,
    };
    let (kept, clashing) = (
        AppointmentId::from_uuid(Uuid::now_v7()),
        AppointmentId::from_uuid(Uuid::now_v7()),
    );
    let closed = AppointmentId::from_uuid(Uuid::now_v7());
    let drug = DrugCode::parse("AMOX500").unwrap();
    let stock = StockItemId::for_drug(h, &drug);
    let nid = NationalId::parse("NID-778899").unwrap();
    let (first_patient, second_patient) = (
        PatientId::from_uuid(Uuid::now_v7()),
        PatientId::from_uuid(Uuid::now_v7()),
    );
    let registered_as = |id: PatientId, nid: &NationalId| PatientRegistered {
        patient_id: id,
        hospital_id: h,
        name: Name::parse("Baraka Mwangi").unwrap(),
        birth_date: BirthDate::parse("1990-01-02").unwrap(),
        sex: Sex::Male,
        national_id: Some(nid.clone()),
        phone: None,
        region_code: None,
    };
    let registered = |id: PatientId| registered_as(id, &nid);
    // A patient whose national id is corrected after a small cache evicted it.
    let (old_nid, new_nid) = (
        NationalId::parse("NID-100200").unwrap(),
        NationalId::parse("NID-300400").unwrap(),
    );
    let [corrected, spare, same_as_corrected, same_as_old] =
        std::array::from_fn(|_| PatientId::from_uuid(Uuid::now_v7()));
    let (claim, insurer, plan, invoice) = (
        ClaimId::from_uuid(Uuid::now_v7()),
        InsurerId::from_uuid(Uuid::now_v7()),
        PlanId::from_uuid(Uuid::now_v7()),
        InvoiceId::from_uuid(Uuid::now_v7()),
    );
    let submitted = || ClaimSubmitted {
        claim_id: claim,
        hospital_id: h,
        insurer_id: insurer,
        plan_id: plan,
        invoice_id: invoice,
        patient_id: patient,
        member_id: MemberId::parse("AFYA-9").unwrap(),
        currency: Currency::parse("KES").unwrap(),
        claimed_cents: 5000,
        lines: vec![],
    };

    let mut history = vec![
        // A doctor booked for overlapping times at two sites.
        a.record(booked(kept, "2026-12-01T10:00:00Z")),
        b.record(booked(clashing, "2026-12-01T10:15:00Z")),
        // A state change on something already closed.
        a.record(booked(closed, "2026-12-02T10:00:00Z")),
        a.record(AppointmentApproved {
            appointment_id: closed,
            hospital_id: h,
            reason: None,
            approved_by: doctor,
        }),
        a.record(AppointmentCompleted {
            appointment_id: closed,
            hospital_id: h,
            summary: None,
        }),
        b.record(AppointmentCancelled {
            appointment_id: closed,
            hospital_id: h,
            reason: ShortText::parse("patient travelling").unwrap(),
            cancelled_by: doctor,
        }),
        // Stock dispensed past zero.
        a.record(StockReceived {
            stock_item_id: stock,
            hospital_id: h,
            drug_code: drug.clone(),
            name: Name::parse("Amoxicillin").unwrap(),
            quantity: Quantity::new(5).unwrap(),
            batch: None,
            expires_on: None,
        }),
        a.record(StockDispensed {
            stock_item_id: stock,
            hospital_id: h,
            drug_code: drug.clone(),
            quantity: Quantity::new(4).unwrap(),
            prescription_id: PrescriptionId::from_uuid(Uuid::now_v7()),
        }),
        // The same person registered at two sites (the rows interleave, so that a small cache
        // has evicted each state before the clash on it arrives).
        a.record(registered(first_patient)),
        // A claim changed by the hospital after the insurer decided.
        a.record(submitted()),
        b.record(StockDispensed {
            stock_item_id: stock,
            hospital_id: h,
            drug_code: drug.clone(),
            quantity: Quantity::new(4).unwrap(),
            prescription_id: PrescriptionId::from_uuid(Uuid::now_v7()),
        }),
        b.record(registered(second_patient)),
        b.record(ClaimApproved {
            claim_id: claim,
            hospital_id: h,
            insurer_id: insurer,
            approved_cents: 4000,
            decided_by: doctor,
        }),
        // A national id corrected while the patient's state was evicted: a later registration
        // with the new id is a duplicate of it, one with the old id is not.
        a.record(registered_as(corrected, &old_nid)),
        a.record(registered_as(
            spare,
            &NationalId::parse("NID-500600").unwrap(),
        )),
        a.record(PatientDetailsUpdated {
            patient_id: corrected,
            hospital_id: h,
            changes: PatientChanges {
                national_id: Some(new_nid.clone()),
                ..PatientChanges::default()
            },
        }),
        b.record(registered_as(same_as_corrected, &new_nid)),
        b.record(registered_as(same_as_old, &old_nid)),
    ];
    history.push(a.record(submitted()));
    publish(&service.nats_url, &service.prefix, &history).await;

    let answers = wait_for_answers(&service.nats_url, &service.prefix, 6).await;
    let of = |t: &str| -> Vec<&domain::envelope::Envelope> {
        answers.iter().filter(|e| e.event_type == t).collect()
    };
    let conflict = of("AppointmentConflictDetected");
    assert_eq!(conflict.len(), 1, "{answers:#?}");
    assert_eq!(conflict[0].aggregate_id, Uuid::from(clashing));
    assert_eq!(
        conflict[0].payload["conflicting_appointment_id"],
        kept.to_string()
    );
    let late = of("TransitionRejected");
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].aggregate_id, Uuid::from(closed));
    assert_eq!(
        late[0].payload["rejected_event_type"],
        "AppointmentCancelled"
    );
    let flagged = of("StockDiscrepancyFlagged");
    assert_eq!(flagged.len(), 1);
    assert_eq!(flagged[0].payload["balance"], -3);
    let duplicate = of("DuplicatePatientSuspected");
    assert_eq!(duplicate.len(), 2, "{answers:#?}");
    assert_eq!(duplicate[0].aggregate_id, Uuid::from(second_patient));
    assert_eq!(
        duplicate[0].payload["existing_patient_id"],
        first_patient.to_string()
    );
    assert_eq!(duplicate[1].aggregate_id, Uuid::from(same_as_corrected));
    assert_eq!(
        duplicate[1].payload["existing_patient_id"],
        corrected.to_string()
    );
    let amendment = of("ClaimAmendmentRejected");
    assert_eq!(amendment.len(), 1);
    assert_eq!(amendment[0].aggregate_id, Uuid::from(claim));
    assert_eq!(answers.len(), 6, "{answers:#?}");

    // A restart reads the history again: the same answers, none appended twice.
    service.stop().await;
    service.start_with(config).await;
    let mut c = Site::new(Role::Receptionist);
    let later = c.record(registered(PatientId::from_uuid(Uuid::now_v7())));
    publish(&service.nats_url, &service.prefix, &[later]).await;
    let answers = wait_for_answers(&service.nats_url, &service.prefix, 7).await;
    assert_eq!(
        answers.len(),
        7,
        "only the new duplicate is answered: {answers:#?}"
    );
    let all = stream_contents(&service.nats_url, &service.prefix).await;
    // The node, the bootstrap admin and seven answers, in one unbroken chain.
    assert_eq!(verify_central_chain(&all, service.data.path()), 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_reconciler_answers_at_a_time_and_another_node_takes_over_when_it_stops() {
    let mut first = Service::spawn().await;
    // A second central node (its own data dir and key) on the same history.
    let mut second = first.another_node();
    second.start().await;
    let (first_node, _) = command_service::node_identity(first.data.path()).unwrap();
    let (second_node, _) = command_service::node_identity(second.data.path()).unwrap();
    let h = HospitalId::from_uuid(Uuid::now_v7());
    let registered = |id: PatientId, nid: &str| PatientRegistered {
        patient_id: id,
        hospital_id: h,
        name: Name::parse("Achieng Otieno").unwrap(),
        birth_date: BirthDate::parse("1985-03-04").unwrap(),
        sex: Sex::Female,
        national_id: Some(NationalId::parse(nid).unwrap()),
        phone: None,
        region_code: None,
    };
    let (mut a, mut b) = (Site::new(Role::Receptionist), Site::new(Role::Receptionist));
    let pair = |a: &mut Site, b: &mut Site, nid: &str| {
        vec![
            a.record(registered(PatientId::from_uuid(Uuid::now_v7()), nid)),
            b.record(registered(PatientId::from_uuid(Uuid::now_v7()), nid)),
        ]
    };

    publish(
        &first.nats_url,
        &first.prefix,
        &pair(&mut a, &mut b, "NID-1001"),
    )
    .await;
    let answers = wait_for_answers(&first.nats_url, &first.prefix, 1).await;
    assert_eq!(answers.len(), 1, "{answers:#?}");
    assert_eq!(
        answers[0].origin.node_id, first_node,
        "the node started first holds the reconciler's lease"
    );

    // The first node stops and gives its leases up: the second reconciles from then on,
    // reading the history from its start without answering the first clash again.
    first.stop().await;
    publish(
        &second.nats_url,
        &second.prefix,
        &pair(&mut a, &mut b, "NID-2002"),
    )
    .await;
    wait_for_answers(&second.nats_url, &second.prefix, 2).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let all = stream_contents(&second.nats_url, &second.prefix).await;
    let answers: Vec<_> = all
        .iter()
        .filter(|e| e.event_type == "DuplicatePatientSuspected")
        .collect();
    assert_eq!(answers.len(), 2, "each clash answered once: {answers:#?}");
    assert_eq!(answers[1].origin.node_id, second_node);
    verify_central_chain(&all, first.data.path());
    verify_central_chain(&all, second.data.path());
    second.stop().await;
}
