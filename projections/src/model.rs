//! What a read model is to the projector that runs it.

use crate::fact::Fact;
use async_nats::jetstream;
use domain::values::NodeId;
use platform::streams::Names;
use sqlx::PgConnection;
use std::collections::BTreeSet;
use uuid::Uuid;

/// A read model: a set of PostgreSQL schemas folded from the history, batch by batch.
///
/// `apply` runs inside the projector's transaction with `search_path` set to the model's
/// schemas (or to their fresh copies during a rebuild), so its SQL names tables unqualified.
/// It must be a pure function of the facts and of what earlier facts left in the tables: no
/// clock, no random value.
pub trait ReadModel: Send + Sync + 'static {
    /// What a batch changed that is told to the outside after its commit.
    type Changes: Send + Default + 'static;

    /// The model's name, which is also its main schema.
    const NAME: &'static str;

    /// Every schema the model owns, its main one first. A rebuild makes a fresh copy of each.
    const SCHEMAS: &'static [&'static str];

    /// Tables of the main schema that `apply` only ever appends to and never reads. A rebuild
    /// fills them without their secondary indexes and builds those once at the end, as a bulk
    /// load does: one sort per index instead of one random insert per row.
    const APPEND_ONLY: &'static [&'static str] = &[];

    /// Applies a batch of facts, in the order given.
    fn apply(
        &self,
        conn: &mut PgConnection,
        facts: &[&Fact],
    ) -> impl Future<Output = Result<Self::Changes, sqlx::Error>> + Send;

    /// What the query API's answer cache must forget for a batch's changes (written in the
    /// batch's transaction by the live projector). By default nothing in particular: every
    /// cached answer that depends on the model as a whole is forgotten all the same.
    fn touched(_changes: &Self::Changes) -> Touched {
        Touched::default()
    }

    /// Runs after the batch's commit (and only while the model is the live one, not during a
    /// rebuild): publishing what must be published. A failure here is the model's to log and
    /// retry; the batch is committed whatever happens.
    fn after_commit(
        &self,
        _committed: &Committed<'_>,
        _changes: Self::Changes,
    ) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// What a committed batch did, for [`ReadModel::after_commit`].
#[derive(Debug)]
pub struct Committed<'a> {
    pub js: &'a jetstream::Context,
    pub names: &'a Names,
    /// Per origin node whose progress moved: its highest `node_seq` applied now.
    pub nodes: &'a [(NodeId, u64)],
}

/// The keys whose answers a batch changed, for the query API's answer cache
/// (`projection.changes`): the patients whose record changed (details, diagnoses, notes,
/// prescriptions, lab orders, appointments), the doctors whose appointments changed, and each
/// (doctor, day in UTC) whose appointments changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Touched {
    pub patients: BTreeSet<Uuid>,
    pub doctors: BTreeSet<Uuid>,
    pub doctor_days: BTreeSet<(Uuid, chrono::NaiveDate)>,
}
