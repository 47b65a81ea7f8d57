//! Whose events the projectors apply: only those of a node registered earlier in the history
//! (`EdgeNodeRegistered` by an admin, or the central node's own `CentralNodeRegistered` that
//! opens its chain), carrying the hash of their content signed with the key of that
//! registration. Any other event (a node never registered, a key other than the registered one,
//! content changed after signing) is not applied: it is parked with the reason, like an event
//! this build cannot read, and its node's order moves on past it.
//!
//! A signature costs more than the rest of a projector's work on an event, so the reader checks
//! one per run of a node's events that follow each other in its chain within a batch: the
//! last one's, which covers the hashes before it. An event whose content is covered that way
//! is applied even if its own signature bytes were damaged; `hms audit verify` checks every
//! signature one by one and names such an event.
//!
//! The keys are learnt in stream order as messages are read, each at the stream sequence of its
//! registration, and an event is checked against the key its node had at the event's own
//! sequence: a message delivered again later is judged the same way. Every projector records the
//! registrations it applies in `projection.node_keys` (migration 0009), so one that starts from
//! a checkpoint knows the keys registered before it.

use crate::fact::{Fact, Reading};
use domain::envelope::Hash;
use domain::event::Event;
use ed25519_dalek::VerifyingKey;
use sqlx::{PgConnection, PgPool};
use std::collections::HashMap;
use uuid::Uuid;

/// Which events a projector applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origins {
    /// Only events of registered nodes, signed with the registered key (the default).
    Registered,
    /// Every event, whoever signed it: for development histories made without registrations.
    Any,
}

/// The nodes' keys, each with the stream sequence of the registration that gave it.
#[derive(Debug)]
pub struct NodeKeys {
    keys: HashMap<Uuid, Vec<(u64, VerifyingKey)>>,
    /// The subject prefix: an event must arrive on its envelope's own subject.
    prefix: String,
}

impl NodeKeys {
    /// No node registered yet, for events published under `prefix`.
    pub fn new(prefix: &str) -> NodeKeys {
        NodeKeys {
            keys: HashMap::new(),
            prefix: prefix.to_owned(),
        }
    }

    /// The registrations the projectors recorded so far.
    pub async fn load(pool: &PgPool, prefix: &str) -> Result<NodeKeys, sqlx::Error> {
        let rows: Vec<(Uuid, i64, String)> = sqlx::query_as(
            "SELECT node_id, stream_seq, public_key FROM projection.node_keys \
             ORDER BY node_id, stream_seq",
        )
        .fetch_all(pool)
        .await?;
        let mut keys = NodeKeys::new(prefix);
        for (node, seq, text) in rows {
            match domain::values::NodePublicKey::parse(&text) {
                Ok(key) => keys.learn(node, seq as u64, key.verifying_key()),
                // Written only from verified events: a row that does not parse was changed
                // behind the projectors' back; the node's events are then refused.
                Err(e) => tracing::error!(node = %node, stream_seq = seq,
                    "projection.node_keys holds a key that cannot be read ({e}); ignored"),
            }
        }
        Ok(keys)
    }

    fn learn(&mut self, node: Uuid, seq: u64, key: VerifyingKey) {
        let registrations = self.keys.entry(node).or_default();
        if let Err(at) = registrations.binary_search_by_key(&seq, |(s, _)| *s) {
            registrations.insert(at, (seq, key));
        }
    }

    /// The key `node` had for an event at stream sequence `seq`: that of its latest
    /// registration before it.
    fn key_at(&self, node: Uuid, seq: u64) -> Option<&VerifyingKey> {
        let registrations = self.keys.get(&node)?;
        let before = registrations.partition_point(|(s, _)| *s < seq);
        before.checked_sub(1).map(|i| &registrations[i].1)
    }

    /// The key an event at stream sequence `seq` must verify against: its node's registered
    /// one, or for the central node's own first registration the key it registers.
    fn key_for(&self, node: Uuid, seq: u64, event: &Event) -> Option<VerifyingKey> {
        match (self.key_at(node, seq), event) {
            (Some(key), _) => Some(*key),
            (None, Event::CentralNodeRegistered(e)) if e.node_id.as_uuid() == node => {
                Some(e.public_key.verifying_key())
            }
            (None, _) => None,
        }
    }

    /// Lets the events of registered nodes through, each verified against its node's
    /// registered key, and learns the keys registrations give; any other event becomes a
    /// parked reading, with the reason. `readings` are a batch's, in stream order, each with
    /// the subject it arrived on.
    ///
    /// An event must arrive on its envelope's own subject (`<prefix>.events.<org>.…`): the
    /// server's permissions let an edge publish only on its hospital's subjects, so this is
    /// what keeps an edge from recording for another organisation, or from announcing itself
    /// with a central node's self-registration.
    ///
    /// Every event's hash is checked against its content, but a signature costs more than
    /// the rest of a projector's work on an event: of a node's events that follow each other
    /// in its chain (each `prev_hash` the hash before), only the last one's signature is
    /// checked, and it vouches for them all (each signed hash covers the one before). Only if
    /// it fails is each checked. Registrations are checked one by one, before anything
    /// relies on them.
    pub fn check<'r>(&mut self, readings: impl IntoIterator<Item = (&'r str, &'r mut Reading)>) {
        struct Run {
            node: Uuid,
            key: VerifyingKey,
            members: Vec<usize>,
            last_hash: Hash,
        }
        let (subjects, mut readings): (Vec<&str>, Vec<&mut Reading>) = readings.into_iter().unzip();
        let mut open: HashMap<Uuid, Run> = HashMap::new();
        let mut runs: Vec<Run> = Vec::new();
        let mut refusals: Vec<(usize, String)> = Vec::new();
        for (i, reading) in readings.iter().enumerate() {
            let Reading::Event(fact) = &**reading else {
                continue;
            };
            let node = fact.envelope.origin.node_id.as_uuid();
            let seq = fact.stream_seq;
            let own_subject = fact.envelope.subject(&self.prefix);
            if subjects[i] != own_subject {
                refusals.push((
                    i,
                    format!(
                        "published on {}, but the event belongs on {own_subject}",
                        subjects[i]
                    ),
                ));
                continue;
            }
            let Some(key) = self.key_for(node, seq, &fact.event) else {
                refusals.push((i, not_registered(node)));
                continue;
            };
            if let Some((registered, registered_key)) = registration(&fact.event) {
                match fact.envelope.verify(&key) {
                    Ok(()) => self.learn(registered, seq, registered_key),
                    Err(e) => refusals.push((i, not_verified(node, e))),
                }
                continue;
            }
            if let Err(e) = fact.envelope.verify_hash() {
                refusals.push((i, not_verified(node, e)));
                continue;
            }
            let envelope = &fact.envelope;
            match open.get_mut(&node) {
                Some(run) if run.key == key && envelope.prev_hash == run.last_hash => {
                    run.members.push(i);
                    run.last_hash = envelope.hash;
                }
                _ => {
                    let run = Run {
                        node,
                        key,
                        members: vec![i],
                        last_hash: envelope.hash,
                    };
                    runs.extend(open.insert(node, run));
                }
            }
        }
        runs.extend(open.into_values());
        for run in runs {
            let signed = |i: usize| match &*readings[i] {
                Reading::Event(fact) => fact.envelope.verify_signature(&run.key),
                _ => unreachable!("runs hold events"),
            };
            let last = *run.members.last().expect("a run has an event");
            if signed(last).is_ok() {
                continue;
            }
            for &i in &run.members {
                if let Err(e) = signed(i) {
                    refusals.push((i, not_verified(run.node, e)));
                }
            }
        }
        for (i, reason) in refusals {
            let placeholder = Reading::Unreadable {
                reason: String::new(),
            };
            if let Reading::Event(fact) = std::mem::replace(&mut *readings[i], placeholder) {
                *readings[i] = refused(fact, reason);
            }
        }
    }
}

fn not_registered(node: Uuid) -> String {
    format!(
        "node {node} is not registered: no EdgeNodeRegistered or CentralNodeRegistered for it \
         comes before this event"
    )
}

fn not_verified(node: Uuid, e: domain::envelope::VerifyError) -> String {
    format!("the event does not verify against node {node}'s registered key: {e}")
}

/// The node and key a registration event gives.
fn registration(event: &Event) -> Option<(Uuid, VerifyingKey)> {
    match event {
        Event::EdgeNodeRegistered(e) => Some((e.node_id.as_uuid(), e.public_key.verifying_key())),
        Event::CentralNodeRegistered(e) => {
            Some((e.node_id.as_uuid(), e.public_key.verifying_key()))
        }
        _ => None,
    }
}

fn refused(fact: Box<Fact>, reason: String) -> Reading {
    Reading::UnreadableEvent {
        envelope: Box::new(fact.envelope),
        reason,
    }
}

/// Records the registrations among `facts` (applied in the caller's transaction), for
/// projectors that start after them.
pub async fn record(tx: &mut PgConnection, facts: &[&Fact]) -> Result<(), sqlx::Error> {
    let (mut nodes, mut seqs, mut keys) = (Vec::new(), Vec::new(), Vec::new());
    for fact in facts {
        let key = match &fact.event {
            Event::EdgeNodeRegistered(e) => (e.node_id, e.public_key),
            Event::CentralNodeRegistered(e) => (e.node_id, e.public_key),
            _ => continue,
        };
        nodes.push(key.0.as_uuid());
        seqs.push(fact.stream_seq as i64);
        keys.push(key.1.to_base64());
    }
    if nodes.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO projection.node_keys (node_id, stream_seq, public_key) \
         SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::text[]) \
         ON CONFLICT (node_id, stream_seq) DO NOTHING",
    )
    .bind(&nodes)
    .bind(&seqs)
    .bind(&keys)
    .execute(tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    #[test]
    fn an_event_is_judged_by_the_key_registered_last_before_it() {
        let (first, second) = (
            SigningKey::from_bytes(&[1; 32]).verifying_key(),
            SigningKey::from_bytes(&[2; 32]).verifying_key(),
        );
        let node = Uuid::now_v7();
        let mut keys = NodeKeys::new("t");
        keys.learn(node, 10, second);
        keys.learn(node, 5, first);
        keys.learn(node, 5, second); // read again: the first reading stands
        assert_eq!(
            keys.key_at(node, 5),
            None,
            "not before its own registration"
        );
        assert_eq!(keys.key_at(node, 6), Some(&first));
        assert_eq!(keys.key_at(node, 10), Some(&first));
        assert_eq!(keys.key_at(node, 11), Some(&second));
        assert_eq!(keys.key_at(Uuid::now_v7(), 11), None);
    }
}
