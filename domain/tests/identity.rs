//! Identity facts the command service records itself (not decided from a command): logins,
//! refused logins, TOTP enrolment, and the central node's own key; and the pure helpers the
//! service asks before it records them.
mod support;

use domain::Facts;
use domain::conflict::answer;
use domain::envelope::{self, Envelope, EnvelopeDraft, Hash, Origin, Recording};
use domain::event::*;
use domain::user::{Mfa, may_log_in, mfa_required, must_enrol_mfa};
use domain::values::*;
use ed25519_dalek::SigningKey;
use support::*;

fn nonce(s: &str) -> SecretNonce {
    SecretNonce::parse(s).unwrap()
}

fn enrolment_started(who: &domain::Actor, n: &str) -> Event {
    MfaEnrolmentStarted {
        user_id: who.user_id,
        org_id: who.org_id,
        secret_nonce: nonce(n),
    }
    .into()
}

fn enabled(who: &domain::Actor, n: &str) -> Event {
    MfaEnabled {
        user_id: who.user_id,
        org_id: who.org_id,
        secret_nonce: nonce(n),
    }
    .into()
}

fn logged_in(who: &domain::Actor, mfa: bool) -> Event {
    UserLoggedIn {
        user_id: who.user_id,
        org_id: who.org_id,
        mfa,
    }
    .into()
}

fn login_failed(who: &domain::Actor, reason: LoginFailure) -> Event {
    LoginFailed {
        user_id: who.user_id,
        org_id: who.org_id,
        reason,
    }
    .into()
}

fn central_key() -> NodePublicKey {
    NodePublicKey::from_verifying_key(&SigningKey::from_bytes(&[42; 32]).verifying_key())
}

const NONCE_A: &str = "nonce-aaaaaaaaaaaaaaaa";
const NONCE_B: &str = "nonce_bbbbbbbbbbbbbbbb";

// --- the user's MFA state ----------------------------------------------------------------

#[test]
fn a_new_user_has_no_mfa() {
    let f = Fixture::new();
    let user = f.world.store.user(f.nurse.user_id).unwrap();
    assert_eq!(user.mfa, Mfa::default());
    assert!(!user.mfa.is_enabled());
}

#[test]
fn an_enrolment_started_is_pending_and_a_later_one_replaces_it() {
    let mut f = Fixture::new();
    let admin = f.hospital_admin.clone();
    let first = enrolment_started(&admin, NONCE_A);
    f.world.given([first]);
    let user = f.world.store.user(admin.user_id).unwrap();
    assert_eq!(user.mfa.pending, Some(nonce(NONCE_A)));
    assert_eq!(user.mfa.enabled, None);

    let second = enrolment_started(&admin, NONCE_B);
    f.world.given([second]);
    let user = f.world.store.user(admin.user_id).unwrap();
    assert_eq!(user.mfa.pending, Some(nonce(NONCE_B)));
    assert_eq!(user.mfa.enabled, None);
}

#[test]
fn a_confirmed_enrolment_enables_mfa_and_clears_the_pending_one() {
    let mut f = Fixture::new();
    let admin = f.hospital_admin.clone();
    let started = enrolment_started(&admin, NONCE_A);
    f.world.given([started, enabled(&admin, NONCE_A)]);
    let user = f.world.store.user(admin.user_id).unwrap();
    assert_eq!(
        user.mfa,
        Mfa {
            pending: None,
            enabled: Some(nonce(NONCE_A)),
        }
    );
    assert!(user.mfa.is_enabled());
}

#[test]
fn a_user_state_serialises_without_its_password_hash_or_mfa_nonces() {
    let mut f = Fixture::new();
    let admin = f.hospital_admin.clone();
    let started = enrolment_started(&admin, NONCE_A);
    f.world.given([
        started,
        enabled(&admin, NONCE_A),
        enrolment_started(&admin, NONCE_B),
    ]);
    let state = domain::AggregateState::User(f.world.store.user(admin.user_id).unwrap());
    let json = serde_json::to_value(&state).unwrap();
    assert_eq!(json["user_id"], admin.user_id.to_string());
    assert_eq!(
        json["mfa"],
        serde_json::json!({"pending": true, "enabled": true})
    );
    assert!(json.get("password_hash").is_none(), "{json}");
    let text = json.to_string();
    for secret in [hash().as_str(), NONCE_A, NONCE_B] {
        assert!(!text.contains(secret), "{secret} shown in {text}");
    }
}

#[test]
fn a_new_enrolment_keeps_mfa_enabled_until_it_is_confirmed() {
    let mut f = Fixture::new();
    let admin = f.hospital_admin.clone();
    let started = enrolment_started(&admin, NONCE_A);
    let again = enrolment_started(&admin, NONCE_B);
    f.world.given([started, enabled(&admin, NONCE_A), again]);
    let user = f.world.store.user(admin.user_id).unwrap();
    assert_eq!(user.mfa.enabled, Some(nonce(NONCE_A)));
    assert_eq!(user.mfa.pending, Some(nonce(NONCE_B)));

    f.world.given([enabled(&admin, NONCE_B)]);
    let user = f.world.store.user(admin.user_id).unwrap();
    assert_eq!(user.mfa.enabled, Some(nonce(NONCE_B)));
    assert_eq!(user.mfa.pending, None);
}

#[test]
fn logins_and_refused_logins_change_no_state() {
    let mut f = Fixture::new();
    let nurse = f.nurse.clone();
    let before = f.world.store.user(nurse.user_id).unwrap();
    f.world.given([
        logged_in(&nurse, false),
        login_failed(&nurse, LoginFailure::WrongPassword),
        login_failed(&nurse, LoginFailure::RateLimited),
        logged_in(&nurse, true),
    ]);
    assert_eq!(f.world.store.user(nurse.user_id).unwrap(), before);
}

#[test]
fn identity_facts_about_an_unknown_user_make_no_user() {
    let mut f = Fixture::new();
    let ghost = actor(
        UserId::from_uuid(uuid(0xD0D0)),
        f.hospital_a,
        &[Role::Nurse],
    );
    let started = enrolment_started(&ghost, NONCE_A);
    f.world.given([
        logged_in(&ghost, false),
        login_failed(&ghost, LoginFailure::WrongPassword),
        started,
        enabled(&ghost, NONCE_A),
    ]);
    assert!(f.world.store.user(ghost.user_id).is_none());
}

#[test]
fn identity_facts_belong_to_the_user_and_their_organisation() {
    let f = Fixture::new();
    let who = &f.insurer_x_user;
    for event in [
        logged_in(who, true),
        login_failed(who, LoginFailure::MfaRequired),
        enrolment_started(who, NONCE_A),
        enabled(who, NONCE_A),
    ] {
        assert_eq!(
            event.aggregate(),
            AggregateRef::new(AggregateType::User, who.user_id),
            "{}",
            event.event_type()
        );
        assert_eq!(event.org_id(), OrgId::from(f.insurer_x));
    }
}

// --- may_log_in --------------------------------------------------------------------------

#[test]
fn an_active_user_may_log_in() {
    let f = Fixture::new();
    let user = f.world.store.user(f.doctor.user_id).unwrap();
    assert_eq!(may_log_in(&user), Ok(()));
}

#[test]
fn a_deactivated_user_may_not_log_in() {
    let mut f = Fixture::new();
    let nurse = f.nurse.user_id;
    f.world.ok(
        &f.admin.clone(),
        domain::command::DeactivateUser { user_id: nurse },
    );
    let user = f.world.store.user(nurse).unwrap();
    assert_eq!(may_log_in(&user), Err(LoginFailure::Deactivated));
}

// --- mfa_required and must_enrol_mfa -----------------------------------------------------

#[test]
fn without_mfa_a_password_is_enough_unless_enforced_for_admins_and_insurers() {
    let f = Fixture::new();
    let nurse = f.world.store.user(f.nurse.user_id).unwrap();
    let admin = f.world.store.user(f.hospital_admin.user_id).unwrap();
    let insurer = f.world.store.user(f.insurer_x_user.user_id).unwrap();
    for user in [&nurse, &admin, &insurer] {
        assert!(!mfa_required(user, false), "{}", user.username);
    }
    assert!(!mfa_required(&nurse, true));
    assert!(mfa_required(&admin, true));
    assert!(mfa_required(&insurer, true));
}

#[test]
fn once_mfa_is_enabled_every_login_needs_a_code() {
    let mut f = Fixture::new();
    let nurse = f.nurse.clone();
    let started = enrolment_started(&nurse, NONCE_A);
    f.world.given([started]);
    let user = f.world.store.user(nurse.user_id).unwrap();
    assert!(
        !mfa_required(&user, false),
        "a pending enrolment is not yet required"
    );

    f.world.given([enabled(&nurse, NONCE_A)]);
    let user = f.world.store.user(nurse.user_id).unwrap();
    assert!(mfa_required(&user, false));
    assert!(mfa_required(&user, true));
}

#[test]
fn admins_and_insurers_must_enrol_until_mfa_is_enabled() {
    let mut f = Fixture::new();
    let store = &f.world.store;
    assert!(must_enrol_mfa(
        &store.user(f.hospital_admin.user_id).unwrap()
    ));
    assert!(must_enrol_mfa(
        &store.user(f.insurer_x_user.user_id).unwrap()
    ));
    assert!(!must_enrol_mfa(&store.user(f.doctor.user_id).unwrap()));
    assert!(!must_enrol_mfa(
        &store.user(f.patient_user.user_id).unwrap()
    ));

    let admin = f.hospital_admin.clone();
    let started = enrolment_started(&admin, NONCE_A);
    f.world.given([started]);
    assert!(
        must_enrol_mfa(&f.world.store.user(admin.user_id).unwrap()),
        "a pending enrolment is not enough"
    );
    f.world.given([enabled(&admin, NONCE_A)]);
    assert!(!must_enrol_mfa(&f.world.store.user(admin.user_id).unwrap()));
}

// --- the central node --------------------------------------------------------------------

#[test]
fn the_central_node_is_on_the_edge_node_aggregate_of_the_system() {
    let node = NodeId::from_uuid(uuid(0xCE17));
    let event: Event = CentralNodeRegistered {
        node_id: node,
        public_key: central_key(),
    }
    .into();
    assert_eq!(
        event.aggregate(),
        AggregateRef::new(AggregateType::EdgeNode, node)
    );
    assert_eq!(event.org_id(), OrgId::SYSTEM);
}

#[test]
fn the_central_node_makes_no_edge_node() {
    let mut f = Fixture::new();
    let node = NodeId::from_uuid(uuid(0xCE17));
    f.world.given([CentralNodeRegistered {
        node_id: node,
        public_key: central_key(),
    }
    .into()]);
    assert!(f.world.store.edge_node(node).is_none());
}

// --- conflicts ---------------------------------------------------------------------------

#[test]
fn identity_facts_are_never_answered_as_conflicts() {
    let mut f = Fixture::new();
    let nurse = f.nurse.clone();
    // A deactivated user with MFA enabled: the state most likely to look "closed".
    let started = enrolment_started(&nurse, NONCE_A);
    f.world.given([started, enabled(&nurse, NONCE_A)]);
    f.world.ok(
        &f.admin.clone(),
        domain::command::DeactivateUser {
            user_id: nurse.user_id,
        },
    );
    let node = NodeId::from_uuid(uuid(0xCE17));
    f.world.given([CentralNodeRegistered {
        node_id: node,
        public_key: central_key(),
    }
    .into()]);
    let arriving = [
        logged_in(&nurse, true),
        login_failed(&nurse, LoginFailure::Deactivated),
        enrolment_started(&nurse, NONCE_B),
        enabled(&nurse, NONCE_B),
        CentralNodeRegistered {
            node_id: node,
            public_key: central_key(),
        }
        .into(),
    ];
    for event in arriving {
        let stamp = f.world.stamp();
        assert!(
            answer(&f.world.store, &event, &stamp).is_empty(),
            "{} was answered",
            event.event_type()
        );
    }
}

// --- the wire ----------------------------------------------------------------------------

/// One of each new event, as the command service would record them.
fn every_identity_event(f: &Fixture) -> Vec<Event> {
    let admin = &f.hospital_admin;
    let mut events = vec![
        CentralNodeRegistered {
            node_id: NodeId::from_uuid(uuid(0xCE17)),
            public_key: central_key(),
        }
        .into(),
        logged_in(admin, false),
        logged_in(admin, true),
        enrolment_started(admin, NONCE_A),
        enabled(admin, NONCE_A),
    ];
    for reason in LoginFailure::ALL {
        events.push(login_failed(admin, *reason));
    }
    events
}

#[test]
fn identity_events_round_trip_through_a_sealed_envelope() {
    let f = Fixture::new();
    let key = SigningKey::from_bytes(&[42; 32]);
    let node = NodeId::from_uuid(uuid(0xCE17));
    let mut prev_hash = Hash::GENESIS;
    let mut texts = Vec::new();
    let events = every_identity_event(&f);
    for (seq, event) in events.iter().enumerate() {
        let sealed = EnvelopeDraft::new(
            event,
            Recording {
                event_id: EventId::from_uuid(uuid(0xE0 + seq as u128)),
                aggregate_version: 1,
                occurred_at: at("2026-11-23T08:00:00Z"),
                actor: envelope::Actor {
                    user_id: f.hospital_admin.user_id,
                    role: Role::Admin,
                },
                origin: Origin {
                    node_id: node,
                    node_seq: seq as u64 + 1,
                },
                command_id: CommandId::from_uuid(uuid(0xC0 + seq as u128)),
                correlation_id: uuid(0xC0),
                causation_id: uuid(0xC0),
                prev_hash,
            },
        )
        .seal(&key)
        .expect("encodable");
        prev_hash = sealed.hash;
        texts.push(serde_json::to_string(&sealed).unwrap());
    }
    let envelopes: Vec<Envelope> = texts
        .iter()
        .map(|t| serde_json::from_str(t).unwrap())
        .collect();
    envelope::verify_chain(node, key.verifying_key(), &envelopes).expect("the chain verifies");
    for (envelope, original) in envelopes.iter().zip(&events) {
        assert_eq!(envelope.event_type, original.event_type());
        assert_eq!(envelope.schema_version, 1);
        assert_eq!(&envelope.event().unwrap(), original);
    }
}

#[test]
fn identity_payloads_have_their_documented_shape() {
    let f = Fixture::new();
    let admin = &f.hospital_admin;
    let failed = login_failed(admin, LoginFailure::WrongMfaCode).payload();
    assert_eq!(failed["reason"], "wrong_mfa_code");
    assert_eq!(failed["org_id"], admin.org_id.to_string());
    let words: Vec<&str> = LoginFailure::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        words,
        [
            "wrong_password",
            "deactivated",
            "mfa_required",
            "wrong_mfa_code",
            "rate_limited"
        ]
    );
    let started = enrolment_started(admin, NONCE_A).payload();
    assert_eq!(started["secret_nonce"], NONCE_A);
    assert!(
        started.get("secret").is_none(),
        "the secret is never recorded"
    );
    let logged = logged_in(admin, true).payload();
    assert_eq!(logged["mfa"], true);
}

#[test]
fn a_secret_nonce_is_16_to_64_url_safe_characters() {
    assert!(SecretNonce::parse(&"a".repeat(16)).is_ok());
    assert!(SecretNonce::parse(&"Z9_-".repeat(16)).is_ok());
    assert!(SecretNonce::parse(&"a".repeat(15)).is_err());
    assert!(SecretNonce::parse(&"a".repeat(65)).is_err());
    assert!(SecretNonce::parse("aaaaaaaaaaaaaaa=").is_err());
    assert!(SecretNonce::parse(" aaaaaaaaaaaaaaaa").is_err());
    assert!(SecretNonce::parse("aaaaaaaa/aaaaaaaa").is_err());
    let payload = serde_json::json!({
        "user_id": uuid(1).to_string(),
        "org_id": uuid(2).to_string(),
        "secret_nonce": "short",
    });
    assert!(Event::decode("MfaEnabled", 1, payload).is_err());
}
