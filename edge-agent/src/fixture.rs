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
        let insurer_user = Actor {
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
            insurer_user,
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

        let seed: [u8; 32] = derive("central-key")
            .into_bytes()
            .repeat(2)
            .try_into()
            .expect("32 bytes");
        let central_key = SigningKey::from_bytes(&seed);
        let central_node = NodeId::from_uuid(derive("central-node"));
        let at = Timestamp::parse("2026-01-01T00:00:00Z").expect("a time");
        let mut store = MemoryStore::new();
        let mut history = Vec::new();
        let mut prev_hash = Hash::GENESIS;
        for (n, (actor, command)) in commands.into_iter().enumerate() {
            let command_id = CommandId::from_uuid(derive(&format!("command-{n}")));
            let meta = CommandMeta {
                command_id,
                actor: actor.clone(),
                at,
            };
            let decision = domain::decide::decide(&command, &meta, &store)
                .unwrap_or_else(|r| panic!("the development history is valid: {r}"));
            for event in decision.events {
                let seq = history.len() as u64 + 1;
                let version = store
                    .history()
                    .iter()
                    .filter(|(e, _)| e.aggregate() == event.aggregate())
                    .count() as u64
                    + 1;
                let sealed = EnvelopeDraft::new(
                    &event,
                    Recording {
                        event_id: EventId::from_uuid(derive(&format!("event-{seq}"))),
                        aggregate_version: version,
                        occurred_at: at,
                        actor: envelope::Actor {
                            user_id: actor.user_id,
                            role: decision.role,
                        },
                        origin: Origin {
                            node_id: central_node,
                            node_seq: seq,
                        },
                        command_id,
                        correlation_id: command_id.as_uuid(),
                        causation_id: command_id.as_uuid(),
                        prev_hash,
                    },
                )
                .seal(&central_key)
                .expect("a development event seals");
                prev_hash = sealed.hash;
                store.apply(&event, &sealed.stamp());
                history.push(sealed);
            }
        }
        DevHospital {
            hospital_id,
            insurer_id,
            plan_id,
            staff,
            history,
        }
    }
}
