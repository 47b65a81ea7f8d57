use super::*;
use proptest::prelude::*;
use serde_json::json;

fn signing_key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn node(n: u8) -> NodeId {
    NodeId::from_uuid(Uuid::from_u128(
        0x0190_0000_0000_7000_8000_0000_0000_0000 | u128::from(n),
    ))
}

/// A draft of node `node_id`'s event number `node_seq`.
fn draft(node_id: NodeId, node_seq: u64, prev_hash: Hash, payload: Value) -> EnvelopeDraft {
    let node_bits = node_id.as_uuid().as_u128() & 0xff;
    EnvelopeDraft {
        event_id: EventId::from_uuid(Uuid::from_u128(
            0x0190_a5b8_0000_7000_8000_0000_0000_0000 | node_bits << 64 | u128::from(node_seq),
        )),
        aggregate_type: AggregateType::Appointment,
        aggregate_id: Uuid::from_u128(0x0190_a5b8_0000_7000_9000_0000_0000_00aa),
        aggregate_version: node_seq,
        event_type: "AppointmentBooked".to_owned(),
        schema_version: 1,
        occurred_at: Timestamp::parse("2026-11-23T09:32:32.123456Z").unwrap(),
        org_id: OrgId::from_uuid(Uuid::from_u128(0x0190_a5b8_0000_7000_a000_0000_0000_0001)),
        actor: Actor {
            user_id: UserId::from_uuid(Uuid::from_u128(0x0190_a5b8_0000_7000_b000_0000_0000_0002)),
            role: Role::Receptionist,
        },
        origin: Origin { node_id, node_seq },
        command_id: CommandId::from_uuid(Uuid::from_u128(
            0x0190_a5b8_0000_7000_c000_0000_0000_0000 | u128::from(node_seq),
        )),
        correlation_id: Uuid::from_u128(0x0190_a5b8_0000_7000_d000_0000_0000_0004),
        causation_id: Uuid::from_u128(0x0190_a5b8_0000_7000_e000_0000_0000_0005),
        prev_hash,
        payload,
    }
}

/// Node `node_id`'s first `len` events, chained and signed with `key`.
fn chain(key: &SigningKey, node_id: NodeId, len: u64) -> Vec<Envelope> {
    let mut events: Vec<Envelope> = Vec::new();
    for node_seq in 1..=len {
        let prev_hash = events.last().map_or(Hash::GENESIS, |e| e.hash);
        let payload = json!({"slot": node_seq, "doctor": "dr-okafor"});
        events.push(
            draft(node_id, node_seq, prev_hash, payload)
                .seal(key)
                .unwrap(),
        );
    }
    events
}

fn break_reason(events: &[Envelope]) -> Option<BreakReason> {
    verify_chain(node(1), signing_key(1).verifying_key(), events)
        .err()
        .map(|b| b.reason)
}

// ---- one envelope ----

#[test]
fn a_sealed_envelope_verifies() {
    let key = signing_key(1);
    let sealed = draft(node(1), 1, Hash::GENESIS, json!({"a": 1}))
        .seal(&key)
        .unwrap();
    assert_eq!(sealed.verify(&key.verifying_key()), Ok(()));
    assert_eq!(
        sealed.verify(&signing_key(2).verifying_key()),
        Err(VerifyError::BadSignature)
    );
}

#[test]
fn json_round_trip_gives_an_equal_envelope_that_still_verifies() {
    let key = signing_key(1);
    let payload = json!({"note": "a \"quoted\" \\ line\nnext", "n": -3, "list": [null, true]});
    let sealed = draft(node(1), 1, Hash::GENESIS, payload)
        .seal(&key)
        .unwrap();
    let text = serde_json::to_string(&sealed).unwrap();
    let parsed: Envelope = serde_json::from_str(&text).unwrap();
    assert_eq!(parsed, sealed);
    assert_eq!(parsed.verify(&key.verifying_key()), Ok(()));
}

/// The hand-written example of the format; if this changes, every stored hash changes.
const PINNED_CANONICAL: &str = r#"{"actor":{"role":"doctor","user_id":"00000000-0000-0000-0000-000000000002"},"aggregate_id":"00000000-0000-0000-0000-0000000000aa","aggregate_type":"patient","aggregate_version":3,"causation_id":"00000000-0000-0000-0000-000000000006","command_id":"00000000-0000-0000-0000-000000000004","correlation_id":"00000000-0000-0000-0000-000000000005","event_id":"0190a5b8-0000-7000-8000-000000000001","event_type":"PatientRegistered","occurred_at":"2026-11-23T09:32:32.123456Z","org_id":"00000000-0000-0000-0000-000000000000","origin":{"node_id":"00000000-0000-0000-0000-000000000003","node_seq":7},"payload":{"":[],"B":{"x":{},"y":18446744073709551615},"a":[true,null,"q\"\\\n\u001fé/"],"z":-1},"prev_hash":"0000000000000000000000000000000000000000000000000000000000000000","schema_version":1}"#;
/// SHA-256 of `PINNED_CANONICAL`, computed outside Rust (Python's hashlib).
const PINNED_HASH: &str = "9173b1fa72c914aa00ba3468ddddd1a608e4dce7778e629c4ac75b9bbc8bc193";

fn pinned_draft() -> EnvelopeDraft {
    EnvelopeDraft {
        event_id: EventId::from_uuid(Uuid::from_u128(0x0190_a5b8_0000_7000_8000_0000_0000_0001)),
        aggregate_type: AggregateType::Patient,
        aggregate_id: Uuid::from_u128(0xaa),
        aggregate_version: 3,
        event_type: "PatientRegistered".to_owned(),
        schema_version: 1,
        occurred_at: Timestamp::parse("2026-11-23T09:32:32.123456Z").unwrap(),
        org_id: OrgId::SYSTEM,
        actor: Actor {
            user_id: UserId::from_uuid(Uuid::from_u128(2)),
            role: Role::Doctor,
        },
        origin: Origin {
            node_id: NodeId::from_uuid(Uuid::from_u128(3)),
            node_seq: 7,
        },
        command_id: CommandId::from_uuid(Uuid::from_u128(4)),
        correlation_id: Uuid::from_u128(5),
        causation_id: Uuid::from_u128(6),
        prev_hash: Hash::GENESIS,
        payload: json!({
            "z": -1,
            "a": [true, null, "q\"\\\n\u{1f}é/"],
            "B": {"y": u64::MAX, "x": {}},
            "": [],
        }),
    }
}

#[test]
fn canonical_bytes_of_a_small_envelope_are_pinned() {
    let draft = pinned_draft();
    let bytes = draft.canonical_bytes().unwrap();
    assert_eq!(String::from_utf8(bytes).unwrap(), PINNED_CANONICAL);
    let sealed = draft.seal(&signing_key(1)).unwrap();
    assert_eq!(sealed.hash.to_string(), PINNED_HASH);
    assert_eq!(
        sealed.canonical_bytes().unwrap(),
        PINNED_CANONICAL.as_bytes()
    );
}

#[test]
fn canonical_bytes_are_the_wire_json_without_hash_and_signature() {
    let sealed = pinned_draft().seal(&signing_key(1)).unwrap();
    let mut wire = serde_json::to_value(&sealed).unwrap();
    let members = wire.as_object_mut().unwrap();
    assert!(members.remove("hash").is_some() && members.remove("signature").is_some());
    let canonical: Value = serde_json::from_slice(&sealed.canonical_bytes().unwrap()).unwrap();
    assert_eq!(canonical, wire);
}

#[test]
fn key_order_inside_payload_does_not_change_the_hash() {
    // Equal maps whatever serde_json's Map keeps (sorted, or insertion order under
    // `preserve_order`); the writer's own sorting is tested in `canonical`.
    let forward: Value =
        serde_json::from_str(r#"{"a":1,"b":{"c":2,"d":[{"e":3,"f":4}]}}"#).unwrap();
    let backward: Value =
        serde_json::from_str(r#"{"b":{"d":[{"f":4,"e":3}],"c":2},"a":1}"#).unwrap();
    let key = signing_key(1);
    let one = draft(node(1), 1, Hash::GENESIS, forward)
        .seal(&key)
        .unwrap();
    let two = draft(node(1), 1, Hash::GENESIS, backward)
        .seal(&key)
        .unwrap();
    assert_eq!(one.hash, two.hash);
}

#[test]
fn a_float_in_the_payload_is_refused() {
    let key = signing_key(1);
    let refused = draft(
        node(1),
        1,
        Hash::GENESIS,
        json!({"lines": [{"price": 12.5}]}),
    )
    .seal(&key);
    assert_eq!(
        refused,
        Err(EncodeError::FloatNotAllowed {
            path: "/payload/lines/0/price".to_owned()
        })
    );
    let mut sealed = draft(node(1), 1, Hash::GENESIS, json!({"price": 12}))
        .seal(&key)
        .unwrap();
    sealed.payload = json!({"price": 12.0});
    assert!(matches!(
        sealed.verify(&key.verifying_key()),
        Err(VerifyError::Unencodable(
            EncodeError::FloatNotAllowed { .. }
        ))
    ));
}

fn sealed_text() -> (Envelope, String) {
    let sealed = pinned_draft().seal(&signing_key(1)).unwrap();
    let text = serde_json::to_string(&sealed).unwrap();
    (sealed, text)
}

#[test]
fn an_upper_case_hash_or_signature_in_the_text_is_refused() {
    let (sealed, text) = sealed_text();
    for hex in [sealed.hash.to_string(), sealed.signature.to_string()] {
        assert!(
            hex.bytes().any(|b| b.is_ascii_lowercase()),
            "nothing to upper-case"
        );
        let edited = text.replace(&hex, &hex.to_uppercase());
        assert!(
            serde_json::from_str::<Envelope>(&edited).is_err(),
            "{edited}"
        );
    }
}

#[test]
fn ids_and_times_in_another_spelling_are_refused() {
    let (_, text) = sealed_text();
    let respellings = [
        (
            "0190a5b8-0000-7000-8000-000000000001",
            "0190A5B8-0000-7000-8000-000000000001",
        ),
        (
            "0190a5b8-0000-7000-8000-000000000001",
            "0190a5b8000070008000000000000001",
        ),
        (
            "00000000-0000-0000-0000-0000000000aa",
            "00000000-0000-0000-0000-0000000000AA",
        ),
        ("2026-11-23T09:32:32.123456Z", "2026-11-23t09:32:32.123456Z"),
        ("2026-11-23T09:32:32.123456Z", "2026-11-23T09:32:32.123456z"),
        ("2026-11-23T09:32:32.123456Z", "2026-11-23 09:32:32.123456Z"),
        (
            "2026-11-23T09:32:32.123456Z",
            "2026-11-23T09:32:32.123456+00:00",
        ),
        (
            "2026-11-23T09:32:32.123456Z",
            "2026-11-23T09:32:32.1234560Z",
        ),
        ("\"role\":\"doctor\"", "\"role\":\"Doctor\""),
    ];
    for (original, respelled) in respellings {
        assert!(text.contains(original), "{original} not in {text}");
        let edited = text.replacen(original, respelled, 1);
        assert!(
            serde_json::from_str::<Envelope>(&edited).is_err(),
            "accepted {respelled}"
        );
    }
}

#[test]
fn unknown_or_missing_members_are_refused() {
    let (_, text) = sealed_text();
    let extra = text.replacen('{', r#"{"unsigned":"extra","#, 1);
    assert!(serde_json::from_str::<Envelope>(&extra).is_err());
    let extra_in_actor = text.replacen(r#""actor":{"#, r#""actor":{"name":"x","#, 1);
    assert!(serde_json::from_str::<Envelope>(&extra_in_actor).is_err());
    let mut without_signature = serde_json::to_value(sealed_text().0).unwrap();
    without_signature
        .as_object_mut()
        .unwrap()
        .remove("signature");
    assert!(serde_json::from_value::<Envelope>(without_signature).is_err());
}

#[test]
fn a_one_byte_edit_anywhere_in_the_text_never_verifies() {
    // Exhaustive over positions for the edits most likely to slip through: flipping the letter
    // case (hex digits, ids, `T`/`Z`) and flipping the lowest bit (digits, letters).
    let (sealed, text) = sealed_text();
    let key = signing_key(1).verifying_key();
    for at in 0..text.len() {
        let original = text.as_bytes()[at];
        for replacement in [original ^ 0x20, original ^ 0x01] {
            let mut edited = text.clone().into_bytes();
            edited[at] = replacement;
            if let Ok(parsed) = serde_json::from_slice::<Envelope>(&edited) {
                let verdict = parsed.verify(&key);
                assert!(
                    verdict.is_err()
                        || is_hex_case_flip_in_escape(text.as_bytes(), at, replacement),
                    "editing byte {at} to {:?} still verifies: {}",
                    char::from(replacement),
                    String::from_utf8_lossy(&edited),
                );
                if verdict.is_ok() {
                    assert_eq!(parsed, sealed);
                }
            }
        }
    }
}

/// `\u001f` and `\u001F` are one character to every JSON reader; such an edit gives back the
/// very same envelope, so it verifying is not tampering.
fn is_hex_case_flip_in_escape(text: &[u8], at: usize, replacement: u8) -> bool {
    let original = text[at];
    (b'a'..=b'f').contains(&original)
        && replacement == original.to_ascii_uppercase()
        && (2..=5).any(|back| at >= back && text[at - back] == b'\\' && text[at - back + 1] == b'u')
}

#[test]
fn subject_names_the_org_the_aggregate_type_and_the_aggregate() {
    let sealed = pinned_draft().seal(&signing_key(1)).unwrap();
    assert_eq!(
        sealed.subject("hms"),
        "hms.events.00000000-0000-0000-0000-000000000000.patient.00000000-0000-0000-0000-0000000000aa"
    );
}

// ---- a node's chain ----

#[test]
fn a_chain_of_three_verifies() {
    let events = chain(&signing_key(1), node(1), 3);
    assert_eq!(
        verify_chain(node(1), signing_key(1).verifying_key(), &events),
        Ok(3)
    );
    assert_eq!(
        verify_chain(
            node(1),
            signing_key(1).verifying_key(),
            Vec::<Envelope>::new()
        ),
        Ok(0)
    );
}

#[test]
fn a_skipped_node_seq_is_a_gap() {
    let events = chain(&signing_key(1), node(1), 3);
    let skipped = [events[0].clone(), events[2].clone()];
    assert_eq!(
        break_reason(&skipped),
        Some(BreakReason::Gap { expected: 2 })
    );
}

#[test]
fn a_chain_that_does_not_start_at_one_is_a_gap() {
    let events = chain(&signing_key(1), node(1), 3);
    assert_eq!(
        break_reason(&events[1..]),
        Some(BreakReason::Gap { expected: 1 })
    );
}

#[test]
fn reordered_or_repeated_events_are_a_gap() {
    let events = chain(&signing_key(1), node(1), 3);
    let reordered = [events[0].clone(), events[2].clone(), events[1].clone()];
    assert_eq!(
        break_reason(&reordered),
        Some(BreakReason::Gap { expected: 2 })
    );
    let repeated = [events[0].clone(), events[1].clone(), events[1].clone()];
    assert_eq!(
        break_reason(&repeated),
        Some(BreakReason::Gap { expected: 3 })
    );
}

#[test]
fn a_changed_payload_is_a_hash_mismatch() {
    let mut events = chain(&signing_key(1), node(1), 3);
    events[1].payload["slot"] = json!(99);
    assert_eq!(break_reason(&events), Some(BreakReason::HashMismatch));
}

#[test]
fn a_changed_prev_hash_is_a_prev_hash_mismatch_even_when_properly_resealed() {
    let key = signing_key(1);
    let mut events = chain(&key, node(1), 3);
    let mut relinked = events[1].clone().into_draft();
    relinked.prev_hash = Hash::sha256(b"another history");
    events[1] = relinked.seal(&key).unwrap();
    assert_eq!(events[1].verify(&key.verifying_key()), Ok(()));
    assert_eq!(break_reason(&events), Some(BreakReason::PrevHashMismatch));
}

#[test]
fn an_event_signed_with_another_key_is_a_bad_signature() {
    let mut events = chain(&signing_key(1), node(1), 3);
    events[2] = events[2]
        .clone()
        .into_draft()
        .seal(&signing_key(2))
        .unwrap();
    assert_eq!(break_reason(&events), Some(BreakReason::BadSignature));
}

#[test]
fn an_event_of_another_node_is_wrong_node() {
    let key = signing_key(1);
    let mut events = chain(&key, node(1), 3);
    let other = chain(&key, node(2), 3);
    events[1] = other[1].clone();
    assert_eq!(
        break_reason(&events),
        Some(BreakReason::WrongNode { found: node(2) })
    );
}

#[test]
fn an_event_with_a_float_is_unencodable() {
    let mut events = chain(&signing_key(1), node(1), 3);
    events[0].payload["slot"] = json!(1.5);
    assert_eq!(
        break_reason(&events),
        Some(BreakReason::Unencodable(EncodeError::FloatNotAllowed {
            path: "/payload/slot".to_owned()
        }))
    );
}

#[test]
fn resume_continues_from_a_verified_point() {
    let key = signing_key(1);
    let events = chain(&key, node(1), 4);
    let mut verifier = ChainVerifier::resume(node(1), key.verifying_key(), 2, events[1].hash);
    assert_eq!(verifier.push(&events[2]), Ok(()));
    assert_eq!(verifier.push(&events[3]), Ok(()));
    assert_eq!(
        (verifier.last_node_seq(), verifier.last_hash()),
        (4, events[3].hash)
    );

    let mut wrong_point = ChainVerifier::resume(node(1), key.verifying_key(), 2, events[0].hash);
    assert_eq!(
        wrong_point.push(&events[2]).map_err(|b| b.reason),
        Err(BreakReason::PrevHashMismatch)
    );
}

#[test]
fn a_rejected_event_leaves_the_verifier_where_it_was() {
    let key = signing_key(1);
    let events = chain(&key, node(1), 2);
    let mut verifier = ChainVerifier::new(node(1), key.verifying_key());
    verifier.push(&events[0]).unwrap();
    let mut tampered = events[1].clone();
    tampered.event_type = "AppointmentCancelled".to_owned();
    assert!(verifier.push(&tampered).is_err());
    assert_eq!(
        (verifier.last_node_seq(), verifier.last_hash()),
        (1, events[0].hash)
    );
    assert_eq!(verifier.push(&events[1]), Ok(()));
}

#[test]
fn a_chain_break_names_the_node_the_node_seq_and_the_event() {
    let events = chain(&signing_key(1), node(1), 3);
    let broken = verify_chain(
        node(1),
        signing_key(1).verifying_key(),
        [&events[0], &events[2]],
    )
    .unwrap_err();
    let message = broken.to_string();
    for part in [
        node(1).to_string(),
        "node_seq 3".to_owned(),
        events[2].event_id.to_string(),
    ] {
        assert!(message.contains(&part), "{message:?} does not name {part}");
    }
    assert!(message.contains("expected node_seq 2"), "{message}");
}

// ---- properties ----

/// Strings of any characters, with the ones that need escaping made common.
pub(super) fn any_text() -> impl Strategy<Value = String> {
    let special = prop::sample::select(vec![
        '"',
        '\\',
        '/',
        '\n',
        '\r',
        '\t',
        '\u{8}',
        '\u{c}',
        '\u{0}',
        '\u{b}',
        '\u{1f}',
        '\u{7f}',
        '\u{2028}',
        'é',
        '\u{1F600}',
    ]);
    prop::collection::vec(prop_oneof![any::<char>(), special], 0..12).prop_map(String::from_iter)
}

/// JSON values without floats: nested objects and arrays of strings, integers, bools, null.
fn any_payload() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any_text().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::vec((any_text(), inner), 0..6)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

proptest! {
    // Each case signs twice and verifies once, some milliseconds each in a debug build.
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn the_hash_is_stable_across_sealing_and_json_text(payload in any_payload()) {
        let key = signing_key(1);
        let draft = draft(node(1), 1, Hash::GENESIS, payload);
        let first = draft.clone().seal(&key).unwrap();
        let second = draft.seal(&key).unwrap();
        prop_assert_eq!(first.hash, second.hash);

        let text = serde_json::to_string(&first).unwrap();
        let parsed: Envelope = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(parsed.canonical_bytes().unwrap(), first.canonical_bytes().unwrap());
        prop_assert_eq!(parsed.verify(&key.verifying_key()), Ok(()));
    }
}

proptest! {
    #[test]
    fn a_one_byte_change_to_the_json_text_never_verifies(
        payload in any_payload(),
        at in any::<prop::sample::Index>(),
        flip in 1..=u8::MAX,
    ) {
        let key = signing_key(1);
        let sealed = draft(node(1), 1, Hash::GENESIS, payload).seal(&key).unwrap();
        let text = serde_json::to_vec(&sealed).unwrap();
        let at = at.index(text.len());
        let mut edited = text.clone();
        edited[at] ^= flip;
        if let Ok(parsed) = serde_json::from_slice::<Envelope>(&edited) {
            let verdict = parsed.verify(&key.verifying_key());
            prop_assert!(
                verdict.is_err() || is_hex_case_flip_in_escape(&text, at, edited[at]),
                "editing byte {} still verifies: {}", at, String::from_utf8_lossy(&edited)
            );
            if verdict.is_ok() {
                prop_assert_eq!(parsed, sealed);
            }
        }
    }
}
