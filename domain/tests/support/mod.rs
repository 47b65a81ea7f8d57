//! Test harness for the deciders: a world that folds events in memory, actors for every role,
//! and a standard fixture built by issuing real commands (so building it already exercises the
//! happy paths). Tests read as given / when / then.
#![allow(dead_code)]

use domain::command::*;
use domain::event::*;
use domain::memory::MemoryStore;
use domain::values::*;
use domain::{Decision, Rejection, Stamp, decide};
use uuid::Uuid;

/// A fresh id from a counter, so failures print readable, stable ids.
pub fn uuid(n: u128) -> Uuid {
    Uuid::from_u128(0x1000_0000_0000_4000_8000_0000_0000_0000 + n)
}

pub fn at(s: &str) -> Timestamp {
    Timestamp::parse(s).expect("test timestamp")
}

pub fn name(s: &str) -> Name {
    Name::parse(s).unwrap()
}
pub fn text(s: &str) -> ShortText {
    ShortText::parse(s).unwrap()
}
pub fn long(s: &str) -> LongText {
    LongText::parse(s).unwrap()
}
pub fn drug(s: &str) -> DrugCode {
    DrugCode::parse(s).unwrap()
}
pub fn service(s: &str) -> ServiceCode {
    ServiceCode::parse(s).unwrap()
}
pub fn qty(n: i64) -> Quantity {
    Quantity::new(n).unwrap()
}
pub fn cents(n: i64) -> Cents {
    Cents::new(n).unwrap()
}
pub fn minutes(n: u32) -> DurationMinutes {
    DurationMinutes::new(n).unwrap()
}
pub fn kes() -> Currency {
    Currency::parse("KES").unwrap()
}
pub fn region(s: &str) -> RegionCode {
    RegionCode::parse(s).unwrap()
}
pub fn birth(s: &str) -> BirthDate {
    BirthDate::parse(s).unwrap()
}
pub fn icd10(s: &str) -> Icd10Code {
    Icd10Code::parse(s).unwrap()
}
pub fn hash() -> PasswordHash {
    PasswordHash::parse("$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA")
        .unwrap()
}

pub fn actor(user: UserId, org: impl Into<OrgId>, roles: &[Role]) -> Actor {
    Actor {
        user_id: user,
        org_id: org.into(),
        roles: roles.to_vec(),
        patient_id: None,
    }
}

/// The kind of refusal a test expects, with the field named for an invalid one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    NotFound(AggregateType),
    Forbidden,
    Conflict,
    Invalid(&'static str),
}

/// A history folded in memory, and a clock that moves one minute per command.
pub struct World {
    pub store: MemoryStore,
    pub now: Timestamp,
    pub node: NodeId,
    next_event: u128,
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

impl World {
    pub fn new() -> Self {
        Self {
            store: MemoryStore::new(),
            now: at("2026-11-23T08:00:00Z"),
            node: NodeId::from_uuid(uuid(0xED6E)),
            next_event: 0,
        }
    }

    pub fn stamp(&mut self) -> Stamp {
        self.next_event += 1;
        Stamp {
            event_id: EventId::from_uuid(Uuid::from_u128(0xE000_0000 + self.next_event)),
            occurred_at: self.now,
            node_id: self.node,
        }
    }

    /// Given: these events happened.
    pub fn given(&mut self, events: impl IntoIterator<Item = Event>) -> &mut Self {
        for e in events {
            let s = self.stamp();
            self.store.apply(&e, &s);
        }
        self
    }

    pub fn meta(&self, actor: &Actor) -> CommandMeta {
        CommandMeta {
            command_id: CommandId::from_uuid(Uuid::from_u128(0xC000_0000 + self.next_event)),
            actor: actor.clone(),
            at: self.now,
        }
    }

    /// When: decide the command against the world, without recording anything.
    pub fn when(&self, actor: &Actor, command: impl Into<Command>) -> Result<Decision, Rejection> {
        decide(&command.into(), &self.meta(actor), &self.store)
    }

    /// Decide and, if accepted, record the events (to build up a history from commands).
    pub fn run(
        &mut self,
        actor: &Actor,
        command: impl Into<Command>,
    ) -> Result<Vec<Event>, Rejection> {
        let decision = self.when(actor, command)?;
        self.now = self.now.plus_minutes(1);
        self.given(decision.events.clone());
        Ok(decision.events)
    }

    /// Like [`World::run`], for a command the test needs to succeed.
    pub fn ok(&mut self, actor: &Actor, command: impl Into<Command>) -> Vec<Event> {
        let command = command.into();
        match self.run(actor, command.clone()) {
            Ok(events) => events,
            Err(r) => panic!("expected {command:?} to be accepted, got {r:?}"),
        }
    }

    /// Then: the command is accepted with exactly these events.
    pub fn then(&self, actor: &Actor, command: impl Into<Command>, expected: Vec<Event>) {
        match self.when(actor, command) {
            Ok(d) => assert_eq!(d.events, expected),
            Err(r) => panic!("expected acceptance, got {r:?}"),
        }
    }

    /// Then: the command is refused in this way, and the refusal maps to its HTTP status.
    pub fn then_refused(
        &self,
        actor: &Actor,
        command: impl Into<Command>,
        expected: Refused,
    ) -> Rejection {
        let command = command.into();
        let rejection = match self.when(actor, command.clone()) {
            Ok(d) => panic!(
                "expected {command:?} to be refused ({expected:?}), got {:?}",
                d.events
            ),
            Err(r) => r,
        };
        let got = match &rejection {
            Rejection::NotFound { aggregate_type, .. } => Refused::NotFound(*aggregate_type),
            Rejection::Forbidden(_) => Refused::Forbidden,
            Rejection::Conflict(_) => Refused::Conflict,
            Rejection::Invalid(errors) => {
                let field = errors.first().map(|e| e.field.clone()).unwrap_or_default();
                match &expected {
                    Refused::Invalid(want) if errors.iter().any(|e| e.field == *want) => {
                        Refused::Invalid(want)
                    }
                    _ => panic!("expected {expected:?}, got Invalid on {field:?}: {rejection}"),
                }
            }
        };
        assert_eq!(got, expected, "refusal was: {rejection}");
        let status = match expected {
            Refused::NotFound(_) => 404,
            Refused::Forbidden => 403,
            Refused::Conflict => 409,
            Refused::Invalid(_) => 422,
        };
        assert_eq!(rejection.http_status(), status);
        rejection
    }
}

/// The standard cast: a system admin; hospital A with one user of every staff role, a second
/// doctor and a registered patient with their own account; hospital B with its own staff;
/// insurers X and Y with a user each, and a plan of X covering consultations and lab work.
pub struct Fixture {
    pub world: World,
    pub admin: Actor,
    pub hospital_a: HospitalId,
    pub hospital_b: HospitalId,
    pub insurer_x: InsurerId,
    pub insurer_y: InsurerId,
    pub receptionist: Actor,
    pub doctor: Actor,
    pub doctor2: Actor,
    pub nurse: Actor,
    pub pharmacist: Actor,
    pub lab_tech: Actor,
    pub accountant: Actor,
    pub hospital_admin: Actor,
    pub patient_user: Actor,
    pub patient: PatientId,
    pub other_patient: PatientId,
    pub b_receptionist: Actor,
    pub b_doctor: Actor,
    pub b_pharmacist: Actor,
    pub b_accountant: Actor,
    pub b_patient: PatientId,
    pub insurer_x_user: Actor,
    pub insurer_y_user: Actor,
    pub plan_x: PlanId,
    next_id: u128,
}

impl Fixture {
    pub fn new() -> Self {
        let mut w = World::new();
        let admin = actor(UserId::from_uuid(uuid(1)), OrgId::SYSTEM, &[Role::Admin]);
        let hospital_a = HospitalId::from_uuid(uuid(0xA));
        let hospital_b = HospitalId::from_uuid(uuid(0xB));
        let insurer_x = InsurerId::from_uuid(uuid(0x1A));
        let insurer_y = InsurerId::from_uuid(uuid(0x1B));
        w.ok(
            &admin,
            RegisterHospital {
                hospital_id: hospital_a,
                name: name("Nairobi General"),
                region_code: region("KE-30"),
            },
        );
        w.ok(
            &admin,
            RegisterHospital {
                hospital_id: hospital_b,
                name: name("Mombasa Coast"),
                region_code: region("KE-28"),
            },
        );
        w.ok(
            &admin,
            RegisterInsurer {
                insurer_id: insurer_x,
                name: name("Afya Insurance"),
            },
        );
        w.ok(
            &admin,
            RegisterInsurer {
                insurer_id: insurer_y,
                name: name("Bima Mutual"),
            },
        );

        let mut n = 100;
        let mut user = |w: &mut World, org: OrgId, roles: &[Role], patient: Option<PatientId>| {
            n += 1;
            let id = UserId::from_uuid(uuid(n));
            w.ok(
                &admin,
                RegisterUser {
                    user_id: id,
                    username: Username::parse(&format!("user{n}")).unwrap(),
                    password_hash: hash(),
                    display_name: name(&format!("User {n}")),
                    org_id: org,
                    roles: roles.to_vec(),
                    patient_id: patient,
                },
            );
            Actor {
                user_id: id,
                org_id: org,
                roles: roles.to_vec(),
                patient_id: patient,
            }
        };
        let a: OrgId = hospital_a.into();
        let b: OrgId = hospital_b.into();
        let receptionist = user(&mut w, a, &[Role::Receptionist], None);
        let doctor = user(&mut w, a, &[Role::Doctor], None);
        let doctor2 = user(&mut w, a, &[Role::Doctor], None);
        let nurse = user(&mut w, a, &[Role::Nurse], None);
        let pharmacist = user(&mut w, a, &[Role::Pharmacist], None);
        let lab_tech = user(&mut w, a, &[Role::LabTechnician], None);
        let accountant = user(&mut w, a, &[Role::Accountant], None);
        let hospital_admin = user(&mut w, a, &[Role::Admin], None);
        let b_receptionist = user(&mut w, b, &[Role::Receptionist], None);
        let b_doctor = user(&mut w, b, &[Role::Doctor], None);
        let b_pharmacist = user(&mut w, b, &[Role::Pharmacist], None);
        let b_accountant = user(&mut w, b, &[Role::Accountant], None);
        let insurer_x_user = user(&mut w, insurer_x.into(), &[Role::Insurer], None);
        let insurer_y_user = user(&mut w, insurer_y.into(), &[Role::Insurer], None);

        let patient = PatientId::from_uuid(uuid(0x9A));
        let other_patient = PatientId::from_uuid(uuid(0x9B));
        let b_patient = PatientId::from_uuid(uuid(0x9C));
        for (id, who, national) in [
            (patient, &receptionist, "KE-1001"),
            (other_patient, &receptionist, "KE-1002"),
            (b_patient, &b_receptionist, "KE-2001"),
        ] {
            w.ok(
                who,
                RegisterPatient {
                    patient_id: id,
                    name: name("Amina Otieno"),
                    birth_date: birth("1984-03-12"),
                    sex: Sex::Female,
                    national_id: Some(NationalId::parse(national).unwrap()),
                    phone: Some(Phone::parse("+254712345678").unwrap()),
                    region_code: Some(region("KE-30")),
                },
            );
        }
        let patient_user = user(&mut w, a, &[Role::Patient], Some(patient));

        let plan_x = PlanId::from_uuid(uuid(0x91A));
        w.ok(
            &insurer_x_user,
            PublishPlan {
                plan_id: plan_x,
                insurer_id: insurer_x,
                name: name("Afya Gold"),
                currency: kes(),
                premium_cents: NonNegativeCents::new(250_000).unwrap(),
                coverage: vec![
                    CoverageTerm {
                        service_code: service("CONSULT"),
                        percent: Percent::new(80).unwrap(),
                        cap_cents: cents(400_000),
                    },
                    CoverageTerm {
                        service_code: service("LAB"),
                        percent: Percent::new(100).unwrap(),
                        cap_cents: cents(100_000),
                    },
                ],
            },
        );

        Fixture {
            world: w,
            admin,
            hospital_a,
            hospital_b,
            insurer_x,
            insurer_y,
            receptionist,
            doctor,
            doctor2,
            nurse,
            pharmacist,
            lab_tech,
            accountant,
            hospital_admin,
            patient_user,
            patient,
            other_patient,
            b_receptionist,
            b_doctor,
            b_pharmacist,
            b_accountant,
            b_patient,
            insurer_x_user,
            insurer_y_user,
            plan_x,
            next_id: 0x5000,
        }
    }

    /// A fresh id for a new aggregate.
    pub fn id<T: From<Uuid>>(&mut self) -> T {
        self.next_id += 1;
        T::from(uuid(self.next_id))
    }

    /// An appointment of the fixture's patient with `doctor`, booked by the receptionist.
    pub fn book(&mut self, starts_at: &str, minutes_long: u32) -> AppointmentId {
        let id = AppointmentId::from_uuid(self.id());
        let (doctor, receptionist, patient) =
            (self.doctor.user_id, self.receptionist.clone(), self.patient);
        self.world.ok(
            &receptionist,
            BookAppointment {
                appointment_id: id,
                patient_id: patient,
                doctor_id: doctor,
                starts_at: at(starts_at),
                duration_minutes: minutes(minutes_long),
                reason: text("checkup"),
            },
        );
        id
    }

    /// An invoice of the fixture's patient, issued by the accountant.
    pub fn invoice(&mut self, lines: &[(&str, i64)]) -> InvoiceId {
        let id = InvoiceId::from_uuid(self.id());
        let (accountant, patient) = (self.accountant.clone(), self.patient);
        self.world.ok(
            &accountant,
            IssueInvoice {
                invoice_id: id,
                patient_id: patient,
                appointment_id: None,
                currency: kes(),
                lines: lines
                    .iter()
                    .map(|(code, amount)| InvoiceLine {
                        service_code: service(code),
                        description: text("service"),
                        amount_cents: cents(*amount),
                    })
                    .collect(),
            },
        );
        id
    }

    /// The admin merges `other_patient` into `patient` (a duplicate record found later).
    pub fn merge_other_patient(&mut self) {
        let admin = self.admin.clone();
        self.world.ok(
            &admin,
            MergePatients {
                surviving_patient_id: self.patient,
                merged_patient_id: self.other_patient,
            },
        );
    }

    /// Stock of a drug received by the pharmacist of hospital A.
    pub fn stock(&mut self, code: &str, quantity: i64) {
        let pharmacist = self.pharmacist.clone();
        self.world.ok(
            &pharmacist,
            ReceiveStock {
                drug_code: drug(code),
                name: name(code),
                quantity: qty(quantity),
                batch: None,
                expires_on: None,
            },
        );
    }
}

impl Default for Fixture {
    fn default() -> Self {
        Self::new()
    }
}
