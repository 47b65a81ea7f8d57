//! A development hospital: the central events an admin would make for a new site (the hospital,
//! an insurer with a plan, one staff member of each role), sealed into the chain of a
//! development central node. Benchmarks, tests and a first look at an edge use it before sync
//! brings the real ones; it goes through the same path as events received from the command
//! service ([`crate::writer::Writer::receive`]).

use domain::command::{
    Actor, Command, CommandMeta, PublishPlan, RegisterHospital, RegisterInsurer, RegisterUser,
};
use domain::envelope::{self, Envelope, EnvelopeDraft, Hash, Origin, Recording};
use domain::event::CoverageTerm;
use domain::memory::MemoryStore;
use domain::values::*;
use ed25519_dalek::SigningKey;
use uuid::Uuid;

/// A Phc-form argon2id hash that no password matches: development users cannot log in.
const NO_PASSWORD: &str = "$argon2id$v=19$m=19456,t=2,p=1$bm8tbG9naW4$bm8tcGFzc3dvcmQtbWF0Y2hlcw";

/// The development hospital's people and things, by role.
#[derive(Clone, Debug)]
pub struct DevHospital {
    pub hospital_id: HospitalId,
    pub insurer_id: InsurerId,
    pub plan_id: PlanId,
    /// One user per staff role, in the order of [`DevHospital::ROLES`].
    pub staff: Vec<(Role, UserId)>,
    /// The central events that make them, in order.
    pub history: Vec<Envelope>,
    /// The system administrator who registered them.
    pub admin: Actor,
    /// The insurer's user, who publishes the plan and decides claims.
    pub insurer_user: Actor,
    /// The development central node that sealed the history, to record more central events.
    pub central: DevCentral,
}

impl DevHospital {
    pub const ROLES: [Role; 6] = [
        Role::Doctor,
        Role::Nurse,
        Role::Receptionist,
        Role::Pharmacist,
        Role::LabTechnician,
        Role::Accountant,
    ];

    /// The user holding a role (panics for a role without a development user).
    pub fn user(&self, role: Role) -> UserId {
        self.staff
            .iter()
            .find(|(r, _)| *r == role)
            .map(|(_, u)| *u)
            .expect("a development user of that role")
    }

    /// Builds the history for a hospital, with `doctors` doctors (at least one). Ids are derived
    /// from the hospital id, so the same hospital gets the same history.
    pub fn new(hospital_id: HospitalId, doctors: usize) -> DevHospital {
        let derive = |what: &str| Uuid::new_v5(&hospital_id.as_uuid(), what.as_bytes());
        let insurer_id = InsurerId::from_uuid(derive("insurer"));
        let plan_id = PlanId::from_uuid(derive("plan"));
        let admin = Actor {
            user_id: UserId::from_uuid(derive("admin")),
            org_id: OrgId::SYSTEM,
            roles: vec![Role::Admin],
            patient_id: None,
        };
        let insurer_actor = Actor {
            user_id: UserId::from_uuid(derive("insurer-user")),
            org_id: insurer_id.into(),
            roles: vec![Role::Insurer],
            patient_id: None,
        };
        let text = |s: &str| Name::parse(s).expect("a valid name");
        let mut commands: Vec<(Actor, Command)> = vec![
            (
                admin.clone(),
                RegisterHospital {
                    hospital_id,
                    name: text("Development Hospital"),
                    region_code: RegionCode::parse("KE-30").expect("a region"),
                }
                .into(),
            ),
            (
                admin.clone(),
                RegisterInsurer {
                    insurer_id,
                    name: text("Development Insurer"),
                }
                .into(),
            ),
        ];
        let mut staff = Vec::new();
        let user = |role: Role, n: usize, commands: &mut Vec<(Actor, Command)>| {
            let user_id = UserId::from_uuid(derive(&format!("{}-{n}", role.as_str())));
            commands.push((
                admin.clone(),
                RegisterUser {
                    user_id,
                    username: Username::parse(&format!(
                        "{}-{}-{n}",
                        role.as_str().replace('_', "-"),
                        &hospital_id.to_string()[..8]
                    ))
                    .expect("a username"),
                    password_hash: PasswordHash::parse(NO_PASSWORD).expect("a PHC hash"),
                    display_name: text(&format!("Development {} {n}", role.as_str())),
                    org_id: hospital_id.into(),
                    roles: vec![role],
                    patient_id: None,
                }
                .into(),
            ));
            user_id
        };
        for role in Self::ROLES {
            staff.push((role, user(role, 0, &mut commands)));
        }
        for n in 1..doctors.max(1) {
            staff.push((Role::Doctor, user(Role::Doctor, n, &mut commands)));
        }
        commands.push((
            insurer_actor.clone(),
            PublishPlan {
                plan_id,
                insurer_id,
                name: text("Development Plan"),
                currency: Currency::parse("KES").expect("a currency"),
                premium_cents: NonNegativeCents::new(150_000).expect("cents"),
                coverage: vec![CoverageTerm {
                    service_code: ServiceCode::parse("CONSULT").expect("a code"),
                    percent: Percent::new(80).expect("a percent"),
                    cap_cents: Cents::new(500_000).expect("cents"),
                }],
            }
            .into(),
        ));

        let mut central = DevCentral::new(hospital_id.as_uuid());
        let mut history = Vec::new();
        for (actor, command) in commands {
            let sealed = central
                .record(&actor, &command)
                .unwrap_or_else(|r| panic!("the development history is valid: {r}"));
            history.extend(sealed);
        }
        DevHospital {
            hospital_id,
            insurer_id,
            plan_id,
            staff,
            history,
            admin,
            insurer_user: insurer_actor,
            central,
        }
    }
}

/// A development central node: decides commands against everything it has seen and seals the
/// events into its own chain, as the command service does. Tests use it to make central events
/// (a user registered, an insurer's decision) and feed them to an edge through NATS.
#[derive(Clone, Debug)]
pub struct DevCentral {
    namespace: Uuid,
    key: SigningKey,
    pub node_id: NodeId,
    store: MemoryStore,
    prev_hash: Hash,
    seq: u64,
    commands: u64,
    /// When its events occur (fixed, so a history is the same every time).
    pub at: Timestamp,
}

impl DevCentral {
    /// The central node of a development hospital; its key and ids derive from `namespace`.
    pub fn new(namespace: Uuid) -> DevCentral {
        let derive = |what: &str| Uuid::new_v5(&namespace, what.as_bytes());
        let seed: [u8; 32] = derive("central-key")
            .into_bytes()
            .repeat(2)
            .try_into()
            .expect("32 bytes");
        DevCentral {
            namespace,
            key: SigningKey::from_bytes(&seed),
            node_id: NodeId::from_uuid(derive("central-node")),
            store: MemoryStore::new(),
            prev_hash: Hash::GENESIS,
            seq: 0,
            commands: 0,
            at: Timestamp::parse("2026-01-01T00:00:00Z").expect("a time"),
        }
    }

    /// Decides a command and seals its events into this node's chain.
    pub fn record(
        &mut self,
        actor: &Actor,
        command: &Command,
    ) -> Result<Vec<Envelope>, domain::rejection::Rejection> {
        let derive = |what: &str| Uuid::new_v5(&self.namespace, what.as_bytes());
        let command_id = CommandId::from_uuid(derive(&format!("command-{}", self.commands)));
        self.commands += 1;
        let meta = CommandMeta {
            command_id,
            actor: actor.clone(),
            at: self.at,
        };
        let decision = domain::decide::decide(command, &meta, &self.store)?;
        let mut sealed_events = Vec::new();
        for event in decision.events {
            let seq = self.seq + 1;
            let version = self.version_of(&event) + 1;
            let sealed = EnvelopeDraft::new(
                &event,
                Recording {
                    event_id: EventId::from_uuid(derive(&format!("event-{seq}"))),
                    aggregate_version: version,
                    occurred_at: self.at,
                    actor: envelope::Actor {
                        user_id: actor.user_id,
                        role: decision.role,
                    },
                    origin: Origin {
                        node_id: self.node_id,
                        node_seq: seq,
                    },
                    command_id,
                    correlation_id: command_id.as_uuid(),
                    causation_id: command_id.as_uuid(),
                    prev_hash: self.prev_hash,
                },
            )
            .seal(&self.key)
            .expect("a development event seals");
            self.seq = seq;
            self.prev_hash = sealed.hash;
            self.store.apply(&event, &sealed.stamp());
            sealed_events.push(sealed);
        }
        Ok(sealed_events)
    }

    /// Takes in an event another node recorded (an edge's claim, say), as the command service
    /// learns it from the stream, so later decisions see it.
    pub fn observe(&mut self, envelope: &Envelope) {
        let event = envelope.event().expect("a readable event");
        self.store.apply(&event, &envelope.stamp());
    }

    fn version_of(&self, event: &domain::event::Event) -> u64 {
        self.store
            .history()
            .iter()
            .filter(|(e, _)| e.aggregate() == event.aggregate())
            .count() as u64
    }
}

/// Records `events` patient registrations straight into a log, in batches of 2,000, as a site
/// that worked offline for a long time would hold them: the backlog of sync benchmarks and
/// tests. `progress` is called after each batch with the count so far.
pub fn fill_backlog(
    log: &mut crate::log::EventLog,
    hospital: HospitalId,
    events: u64,
    mut progress: impl FnMut(u64),
) -> Result<(), crate::log::LogError> {
    use crate::log::{Append, Decided};
    use domain::event::{Event, PatientRegistered};
    let actor = envelope::Actor {
        user_id: UserId::from_uuid(Uuid::now_v7()),
        role: Role::Receptionist,
    };
    let at = Timestamp::new(chrono::Utc::now());
    let mut written = 0u64;
    while written < events {
        let batch: Vec<Append> = (0..(events - written).min(2000))
            .map(|_| Append {
                command_id: CommandId::from_uuid(Uuid::now_v7()),
                correlation_id: Uuid::now_v7(),
                actor,
                occurred_at: at,
                events: vec![Decided::from(Event::from(PatientRegistered {
                    patient_id: PatientId::from_uuid(Uuid::now_v7()),
                    hospital_id: hospital,
                    name: Name::parse("Amina Otieno").expect("a name"),
                    birth_date: BirthDate::parse("1984-03-12").expect("a date"),
                    sex: Sex::Female,
                    national_id: None,
                    phone: Some(Phone::parse("+254712345678").expect("a phone")),
                    region_code: Some(RegionCode::parse("KE-30").expect("a region")),
                }))],
                traceparent: None,
            })
            .collect();
        log.append_batch(&batch)?;
        written += batch.len() as u64;
        progress(written);
    }
    Ok(())
}
