//! Old events are read in the current shape, never rewritten: a `PatientRegistered` recorded
//! under schema v1 (with `full_name`, before regions were tracked) still verifies as recorded,
//! and reads as v2 with `name` and an unknown `region_code`.
use domain::envelope::{Actor, EnvelopeDraft, Hash, Origin};
use domain::event::{DecodeError, Event, PatientRegistered};
use domain::values::*;
use ed25519_dalek::SigningKey;
use serde_json::json;
use uuid::Uuid;

fn v1_draft() -> EnvelopeDraft {
    let id = |n: u128| Uuid::from_u128(0x0194_0000_0000_7000_8000_0000_0000_0000 + n);
    EnvelopeDraft {
        event_id: EventId::from_uuid(id(1)),
        aggregate_type: AggregateType::Patient,
        aggregate_id: id(2),
        aggregate_version: 1,
        event_type: "PatientRegistered".into(),
        schema_version: 1,
        occurred_at: Timestamp::parse("2025-03-01T08:00:00Z").unwrap(),
        org_id: OrgId::from_uuid(id(3)),
        actor: Actor {
            user_id: UserId::from_uuid(id(4)),
            role: Role::Receptionist,
        },
        origin: Origin {
            node_id: NodeId::from_uuid(id(5)),
            node_seq: 1,
        },
        command_id: CommandId::from_uuid(id(6)),
        correlation_id: id(6),
        causation_id: id(6),
        prev_hash: Hash::GENESIS,
        payload: json!({
            "patient_id": id(2).to_string(),
            "hospital_id": id(3).to_string(),
            "full_name": "Amina Otieno",
            "birth_date": "1984-03-12",
            "sex": "female",
            "national_id": "12345678",
            "phone": null,
        }),
    }
}

#[test]
fn a_v1_patient_registration_reads_in_the_current_shape_and_still_verifies_as_recorded() {
    let key = SigningKey::from_bytes(&[3; 32]);
    let sealed = v1_draft().seal(&key).unwrap();
    let stored: domain::envelope::Envelope =
        serde_json::from_str(&serde_json::to_string(&sealed).unwrap()).unwrap();
    stored
        .verify(&key.verifying_key())
        .expect("the v1 event verifies over the bytes it was recorded with");
    let Event::PatientRegistered(p) = stored.event().unwrap() else {
        panic!("not a registration")
    };
    assert_eq!(
        p,
        PatientRegistered {
            patient_id: PatientId::from_uuid(stored.aggregate_id),
            hospital_id: HospitalId::from_uuid(stored.org_id.as_uuid()),
            name: Name::parse("Amina Otieno").unwrap(),
            birth_date: BirthDate::parse("1984-03-12").unwrap(),
            sex: Sex::Female,
            national_id: Some(NationalId::parse("12345678").unwrap()),
            phone: None,
            region_code: None,
        }
    );
    assert_eq!(
        stored.schema_version, 1,
        "reading never rewrites the stored event"
    );
}

#[test]
fn a_v1_payload_without_its_name_does_not_decode() {
    let mut payload = v1_draft().payload;
    payload.as_object_mut().unwrap().remove("full_name");
    let err = Event::decode("PatientRegistered", 1, payload).unwrap_err();
    assert!(matches!(err, DecodeError::Payload { .. }), "{err:?}");
}

#[test]
fn a_version_newer_than_this_build_or_an_unknown_type_is_refused_not_guessed() {
    let payload = v1_draft().payload;
    assert!(matches!(
        Event::decode("PatientRegistered", 3, payload.clone()),
        Err(DecodeError::UnknownVersion {
            schema_version: 3,
            current: 2,
            ..
        })
    ));
    assert!(matches!(
        Event::decode("PatientRegistered", 0, payload.clone()),
        Err(DecodeError::UnknownVersion { .. })
    ));
    assert!(matches!(
        Event::decode("PatientTeleported", 1, payload),
        Err(DecodeError::UnknownType(_))
    ));
}

#[test]
fn current_events_are_written_at_the_current_version_and_read_back_unchanged() {
    let e: Event = PatientRegistered {
        patient_id: PatientId::from_uuid(Uuid::from_u128(7)),
        hospital_id: HospitalId::from_uuid(Uuid::from_u128(8)),
        name: Name::parse("Baraka Mwangi").unwrap(),
        birth_date: BirthDate::parse("2001-07-30").unwrap(),
        sex: Sex::Male,
        national_id: None,
        phone: None,
        region_code: Some(RegionCode::parse("KE-47").unwrap()),
    }
    .into();
    assert_eq!(e.schema_version(), 2);
    assert_eq!(
        Event::decode(e.event_type(), e.schema_version(), e.payload()).unwrap(),
        e
    );
}

#[test]
fn every_event_type_has_a_schema_version() {
    assert_eq!(Event::TYPES.len(), 42);
    for t in Event::TYPES {
        assert!(Event::current_schema_version(t).is_some(), "{t}");
    }
}
