//! `hms demo`: a narrated tour of the whole system, against the running central services
//! (command service, projectors, query API), through their public APIs only.
//!
//! The tour brings its own site: a mobile clinic whose edge agent runs inside the demo and
//! reaches NATS through a [`link::Link`] the demo can cut, so the edge really goes offline
//! while the central services stay up. Every step prints what happened and the figure that
//! proves it, and fails the demo (exit 1) when it does not hold. Each run makes its own
//! hospital, insurer, users and region, so a run's numbers are its own and it can be run again.

mod client;
mod link;

use anyhow::{Context, Result, bail, ensure};
use chrono::{Duration as Days, Utc};
use client::{Http, Session};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use platform::streams::Names;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The file the demo keeps the admin's TOTP secret in (an `otpauth://` URI, mode 0600) once it
/// has turned the admin's multi-factor sign-in on: what an authenticator app would hold.
pub const ADMIN_TOTP_FILE: &str = "demo-admin-totp.uri";

/// Where the system runs.
#[derive(Clone, Debug)]
pub struct Target {
    pub command_url: String,
    pub query_url: String,
    pub nats_url: String,
    pub data_dir: PathBuf,
    pub admin_password: Option<String>,
}

/// `hms demo`'s options.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// The command service.
    #[arg(
        long,
        env = "HMS_DEMO_COMMAND_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    command_url: String,
    /// The query API.
    #[arg(
        long,
        env = "HMS_DEMO_QUERY_URL",
        default_value = "http://127.0.0.1:8082"
    )]
    query_url: String,
    #[command(flatten)]
    nats: crate::nats_args::NatsArgs,
    /// The system's data directory: the admin password `hms up` generated is kept there, and
    /// the demo's edge keeps its log under `demo/`.
    #[arg(long, env = "HMS_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// The admin's password; by default the one `hms up` generated and kept in the data dir.
    #[arg(long, env = "HMS_BOOTSTRAP_ADMIN_PASSWORD", hide_env_values = true)]
    admin_password: Option<String>,
}

pub fn run(args: DemoArgs) -> Result<()> {
    let admin_password = args
        .admin_password
        .clone()
        .or_else(|| crate::up::kept_admin_password(&args.data_dir));
    let demo = Demo::new(Target {
        command_url: args.command_url.trim_end_matches('/').to_owned(),
        query_url: args.query_url.trim_end_matches('/').to_owned(),
        nats_url: args.nats.nats_url.clone(),
        data_dir: args.data_dir.clone(),
        admin_password,
    })?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(demo.run())
}

#[derive(Debug)]
pub struct Demo {
    target: Target,
    http: Http,
    names: Names,
    credentials: Option<(String, String)>,
    /// A short tag that keeps this run's names apart from earlier runs'.
    run: String,
    step: usize,
}

const STEPS: usize = 12;

/// What the steps pass on to each other.
#[derive(Debug, Default)]
struct Tour {
    admin: Option<Session>,
    insurer: Option<Session>,
    hospital: Uuid,
    insurer_id: Uuid,
    region: String,
    staff_password: String,
    users: Vec<(String, Uuid)>,
    plan: Uuid,
    patients: Vec<Patient>,
    appointment_booked_at: Option<chrono::DateTime<Utc>>,
    invoice: Uuid,
    claim: Uuid,
    claimed_cents: u64,
}

#[derive(Debug, Clone)]
struct Patient {
    id: Uuid,
    name: String,
    national_id: String,
    appointment: Uuid,
    flu: bool,
}

impl Tour {
    fn user(&self, role: &str) -> (String, Uuid) {
        self.users
            .iter()
            .find(|(name, _)| name.starts_with(role))
            .cloned()
            .expect("registered in step 2")
    }
}

impl Demo {
    pub fn new(target: Target) -> Result<Demo> {
        let prefix = std::env::var("HMS_SUBJECT_PREFIX").unwrap_or_else(|_| "hms".into());
        let credentials = std::env::var("HMS_NATS_USER")
            .ok()
            .zip(std::env::var("HMS_NATS_PASSWORD").ok());
        Ok(Demo {
            target,
            http: Http::new()?,
            names: Names::new(&prefix).context("HMS_SUBJECT_PREFIX")?,
            credentials,
            run: Uuid::now_v7().simple().to_string()[20..26].to_owned(),
            step: 0,
        })
    }

    fn title(&mut self, title: &str) {
        self.step += 1;
        say!("\n[{}/{STEPS}] {title}", self.step);
    }

    fn said(&self, what: impl std::fmt::Display) {
        say!("      {what}");
    }

    fn proved(&self, what: impl std::fmt::Display) {
        say!("   ✓  {what}");
    }

    /// The whole tour; an error names the step that did not hold.
    pub async fn run(self) -> Result<()> {
        let mut demo = self;
        let result = demo.tour().await;
        if let Err(e) = &result {
            say!("   ✗  step {} did not hold: {e:#}", demo.step);
        }
        result
    }

    async fn tour(&mut self) -> Result<()> {
        say!(
            "\nhms demo (run {}): a mobile clinic works offline, syncs, and is audited",
            self.run
        );
        let started = Instant::now();
        let mut tour = Tour::default();
        self.ready().await?;
        self.admin_signs_in(&mut tour).await?;
        self.admin_registers(&mut tour).await?;
        self.insurer_publishes_a_plan(&mut tour).await?;
        let (edge, link) = self.edge_starts(&mut tour).await?;
        let result = self.offline_and_back(&mut tour, &edge, &link).await;
        let stopped = edge.stop().await;
        result?;
        stopped.context("stopping the demo edge")?;
        self.auditor_verifies(&tour).await?;
        self.analyst_reads(&tour).await?;
        say!(
            "\nDemo complete: every step held ({:.0} s).",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    async fn ready(&mut self) -> Result<()> {
        self.title("The central services are up");
        let within = Duration::from_secs(60);
        for (what, base) in [
            ("command service", &self.target.command_url),
            ("query API", &self.target.query_url),
        ] {
            self.http
                .wait_ready(&format!("{base}/readyz"), within)
                .await
                .with_context(|| format!("the {what} (start the system with `hms up`)"))?;
        }
        self.proved(format!(
            "command service {} and query API {} answer /readyz",
            self.target.command_url, self.target.query_url
        ));
        Ok(())
    }

    async fn admin_signs_in(&mut self, tour: &mut Tour) -> Result<()> {
        self.title("The admin signs in, with a password and a one-time code");
        let password = self.target.admin_password.clone().context(
            "the admin's password is unknown: set HMS_BOOTSTRAP_ADMIN_PASSWORD to it (hms up printed it when it created the admin)",
        )?;
        let totp_file = self.target.data_dir.join(ADMIN_TOTP_FILE);
        let kept = match std::fs::read_to_string(&totp_file) {
            Ok(uri) => Some(client::secret_of_uri(uri.trim())?),
            Err(_) => None,
        };
        let base = self.target.command_url.clone();
        let session = self
            .http
            .sign_in(&base, command_service::BOOTSTRAP_ADMIN, &password, kept.as_ref())
            .await
            .with_context(|| match &kept {
                None => format!(
                    "if the admin turned multi-factor sign-in on outside the demo, the demo cannot make its codes (it keeps the secret in {} when it turns it on itself)",
                    totp_file.display()
                ),
                Some(_) => "signing in as admin".to_owned(),
            })?;
        if kept.is_some() {
            self.proved("admin signed in with password and TOTP code");
        } else {
            // Signed in without a code: multi-factor sign-in is off for the admin. Turn it on,
            // as admins must before acting.
            let (uri, _secret) = self.http.enrol_mfa(&session).await?;
            platform::keys::write_private_file(&totp_file, uri.as_bytes())
                .with_context(|| format!("keeping the TOTP secret in {}", totp_file.display()))?;
            self.said(format!(
                "multi-factor sign-in turned on; the authenticator's secret is kept in {} (mode 0600)",
                totp_file.display()
            ));
            self.proved("admin signed in and enrolled: from now on its sign-in needs a TOTP code");
        }
        tour.admin = Some(session);
        Ok(())
    }

    async fn admin_registers(&mut self, tour: &mut Tour) -> Result<()> {
        self.title("The admin registers a hospital, an insurer and their staff");
        let admin = tour.admin.clone().expect("signed in");
        tour.hospital = Uuid::now_v7();
        tour.insurer_id = Uuid::now_v7();
        tour.region = format!("ZZ-{}", self.run[..3].to_ascii_uppercase());
        tour.staff_password = format!("demo-{}-{}", self.run, Uuid::now_v7().simple());
        let mut events = 0;
        let hospital_name = format!("Riverside Mobile Clinic {}", self.run);
        events += count_events(
            &self
                .http
                .command(&admin, "RegisterHospital", json!({
                    "hospital_id": tour.hospital, "name": hospital_name, "region_code": tour.region,
                }))
                .await?,
        );
        let insurer_name = format!("Jamii Health Cover {}", self.run);
        events += count_events(
            &self
                .http
                .command(
                    &admin,
                    "RegisterInsurer",
                    json!({"insurer_id": tour.insurer_id, "name": insurer_name}),
                )
                .await?,
        );
        let system = Uuid::nil();
        let staff = [
            ("reception", "receptionist", tour.hospital, "Amina Otieno"),
            ("doctor", "doctor", tour.hospital, "Dr. Peter Mwangi"),
            ("pharmacy", "pharmacist", tour.hospital, "Grace Wanjiru"),
            ("accounts", "accountant", tour.hospital, "Samuel Kiprop"),
            ("insurer", "insurer", tour.insurer_id, "Lucy Achieng"),
            ("auditor", "auditor", system, "Joseph Kamau"),
            ("analyst", "analyst", system, "Mercy Njeri"),
        ];
        for (prefix, role, org, display) in staff {
            let user_id = Uuid::now_v7();
            let username = format!("{prefix}-{}", self.run);
            events += count_events(
                &self
                    .http
                    .command(&admin, "RegisterUser", json!({
                        "user_id": user_id, "username": username, "password": tour.staff_password,
                        "display_name": display, "org_id": org, "roles": [role],
                    }))
                    .await?,
            );
            tour.users.push((username, user_id));
        }
        self.said(format!(
            "hospital \"{hospital_name}\" in region {} (a made-up region, one per run)",
            tour.region
        ));
        self.said(format!("insurer \"{insurer_name}\""));
        self.said(format!(
            "users: {}",
            tour.users
                .iter()
                .map(|(u, _)| u.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        self.proved(format!(
            "9 commands accepted, {events} events appended to the canonical history"
        ));
        Ok(())
    }

    async fn insurer_publishes_a_plan(&mut self, tour: &mut Tour) -> Result<()> {
        self.title("The insurer signs in, turns on multi-factor sign-in and publishes a plan");
        let (username, _) = tour.user("insurer");
        let base = self.target.command_url.clone();
        let insurer = self
            .http
            .sign_in(&base, &username, &tour.staff_password, None)
            .await?;
        let refused = self
            .http
            .command(
                &insurer,
                "PublishPlan",
                plan_body(Uuid::now_v7(), tour.insurer_id),
            )
            .await;
        ensure!(
            refused.is_err(),
            "an insurer without multi-factor sign-in was allowed to act"
        );
        self.said("before enrolling: refused (403), insurers must use a second factor");
        self.http.enrol_mfa(&insurer).await?;
        tour.plan = Uuid::now_v7();
        let answer = self
            .http
            .command(
                &insurer,
                "PublishPlan",
                plan_body(tour.plan, tour.insurer_id),
            )
            .await?;
        self.proved(format!(
            "plan \"Family Care\" published ({} event): consultations covered at 80%",
            count_events(&answer)
        ));
        tour.insurer = Some(insurer);
        Ok(())
    }

    /// The mobile clinic's edge: registered by the admin, started here behind a link the demo
    /// can cut, and filled by sync with its hospital, staff and the plans.
    async fn edge_starts(
        &mut self,
        tour: &mut Tour,
    ) -> Result<(edge_agent::service::RunningEdge, link::Link)> {
        self.title("The mobile clinic's edge agent starts and receives its hospital");
        ensure!(
            self.credentials.is_none(),
            "the demo's edge syncs as a development edge, without a NATS account of its own: run the demo against a NATS server without accounts (`hms up` starts one where nats-server is installed)"
        );
        let upstream = crate::deps::nats_endpoint(&self.target.nats_url)?;
        let link = link::Link::open(upstream.to_string()).await?;
        let dir = self.target.data_dir.join("demo").join(&self.run);
        let mut config = edge_agent::EdgeConfig::new(dir.clone());
        config.listen = "127.0.0.1:0".parse().expect("an address");
        config.hospital_id = Some(tour.hospital);
        let keys = edge_agent::service::identity(&config)?;
        config.node_id = Some(keys.identity.node_id.as_uuid());
        let mut sync =
            edge_agent::sync::SyncConfig::new(format!("nats://{}", link.addr), self.names.clone());
        sync.max_backoff = Duration::from_secs(2);
        sync.status_interval = Duration::from_secs(2);
        config.sync = Some(sync);
        let admin = tour.admin.clone().expect("signed in");
        self.http
            .command(
                &admin,
                "RegisterEdgeNode",
                json!({
                    "node_id": keys.identity.node_id, "hospital_id": tour.hospital,
                    "public_key": keys.public_key().to_base64(),
                }),
            )
            .await?;
        self.said(format!(
            "admin registered edge node {} with its public key",
            keys.identity.node_id
        ));
        let edge = edge_agent::start(config)
            .await
            .context("starting the demo's edge agent")?;
        self.said(format!(
            "edge agent listening on http://{} (log in {})",
            edge.addr,
            dir.display()
        ));
        let received = self
            .wait_edge_fed(&keys.identity.node_id.to_string())
            .await?;
        self.proved(format!(
            "{received} central events stored at the edge: its hospital, its staff's credentials, insurers and plans"
        ));
        Ok((edge, link))
    }

    /// Waits until the edge's three inbound consumers have delivered and had acknowledged
    /// everything (the edge acknowledges after its commit); answers how many it acknowledged.
    async fn wait_edge_fed(&self, node: &str) -> Result<u64> {
        let js = self.jetstream().await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut done = true;
            let mut acked = 0;
            for feed in platform::streams::EDGE_FEEDS {
                let name = self.names.edge_consumer(node, feed);
                let info = async {
                    let stream = js.get_stream(self.names.events_stream()).await.ok()?;
                    let mut consumer = stream
                        .get_consumer::<async_nats::jetstream::consumer::pull::Config>(&name)
                        .await
                        .ok()?;
                    consumer.info().await.ok().cloned()
                }
                .await;
                match info {
                    Some(info) if info.num_pending == 0 && info.num_ack_pending == 0 => {
                        acked += info.ack_floor.consumer_sequence;
                    }
                    _ => done = false,
                }
            }
            if done && acked > 0 {
                return Ok(acked);
            }
            if Instant::now() > deadline {
                bail!("the edge's inbound sync has not caught up after 60 s");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// JetStream as the central services reach it (`HMS_NATS_USER` / `HMS_NATS_PASSWORD`).
    async fn jetstream(&self) -> Result<async_nats::jetstream::Context> {
        projections::service::connect_nats(&self.target.nats_url, &self.credentials)
            .await
            .context("the demo's connection to NATS")
    }

    async fn offline_and_back(
        &mut self,
        tour: &mut Tour,
        edge: &edge_agent::service::RunningEdge,
        link: &link::Link,
    ) -> Result<()> {
        let base = format!("http://{}", edge.addr);
        self.title("The edge loses its NATS connection; the receptionist works on");
        link.cut();
        self.said(
            "the link from the edge to NATS is cut (its connections closed, new ones refused)",
        );
        let (username, _) = tour.user("reception");
        let reception = self
            .http
            .sign_in(&base, &username, &tour.staff_password, None)
            .await?;
        self.said(format!(
            "{username} signed in at the edge, offline, with the credentials sync brought"
        ));
        let (_, doctor_id) = tour.user("doctor");
        let today = Utc::now().date_naive();
        let tomorrow_8 = (today + Days::days(1))
            .and_hms_opt(8, 0, 0)
            .expect("a time")
            .and_utc();
        let first_names = [
            "Achieng", "Baraka", "Chebet", "Dalmas", "Esther", "Faith", "Gideon", "Halima",
            "Imani", "Jabari", "Kendi", "Lulu", "Mosi", "Nia",
        ];
        for (i, first) in first_names.iter().enumerate() {
            // Twelve women of about 37 share one public-health cell; two men make cells too
            // small to show.
            let flu = i < 12;
            let birth = today - Days::days(37 * 365 + 10 + i as i64);
            let patient = Patient {
                id: Uuid::now_v7(),
                name: format!("{first} Demo{}", self.run),
                national_id: format!("NID{}{i:02}", self.run.to_ascii_uppercase()),
                appointment: Uuid::now_v7(),
                flu,
            };
            self.http
                .command(&reception, "RegisterPatient", json!({
                    "patient_id": patient.id, "name": patient.name, "birth_date": birth.to_string(),
                    "sex": if flu { "female" } else { "male" }, "national_id": patient.national_id,
                    "region_code": tour.region,
                }))
                .await?;
            self.http
                .command(&reception, "BookAppointment", json!({
                    "appointment_id": patient.appointment, "patient_id": patient.id, "doctor_id": doctor_id,
                    "starts_at": (tomorrow_8 + Days::minutes(20 * i as i64)).to_rfc3339(),
                    "duration_minutes": 15, "reason": if flu { "fever and cough" } else { "stomach pain" },
                }))
                .await?;
            tour.patients.push(patient);
        }
        tour.appointment_booked_at = Some(Utc::now());
        // The edge learns of the cut when its next publish gets no acknowledgement.
        let status = self
            .http
            .get_until(
                &reception,
                "/v1/sync/status",
                Duration::from_secs(60),
                |s| s["connected"] == json!(false),
            )
            .await
            .context("the edge does not notice it is offline")?;
        ensure!(
            status["sent_node_seq"] == json!(0),
            "events reached NATS through a cut link: {status}"
        );
        self.proved(format!(
            "14 patients and 14 appointments recorded at the edge; {} events waiting, none sent; the edge reports connected: false ({})",
            status["pending_events"],
            status["last_error"].as_str().unwrap_or("no error text")
        ));
        // The booking and the approval are a moment apart, for the auditor's as-of read.
        tokio::time::sleep(Duration::from_millis(1100)).await;

        self.title("Offline: the doctor approves, diagnoses and prescribes");
        let (username, _) = tour.user("doctor");
        let doctor = self
            .http
            .sign_in(&base, &username, &tour.staff_password, None)
            .await?;
        let (mut flu, mut stomach) = (0, 0);
        for patient in &tour.patients {
            self.http
                .command(
                    &doctor,
                    "ApproveAppointment",
                    json!({"appointment_id": patient.appointment}),
                )
                .await?;
            let (code, description) = if patient.flu {
                flu += 1;
                ("J10.1", "influenza with respiratory symptoms")
            } else {
                stomach += 1;
                ("A09", "infectious gastroenteritis")
            };
            self.http
                .command(
                    &doctor,
                    "RecordDiagnosis",
                    json!({
                        "patient_id": patient.id, "icd10_code": code, "description": description,
                        "appointment_id": patient.appointment,
                    }),
                )
                .await?;
        }
        let first = tour.patients[0].clone();
        let prescription = Uuid::now_v7();
        self.http
            .command(&doctor, "IssuePrescription", json!({
                "prescription_id": prescription, "patient_id": first.id, "appointment_id": first.appointment,
                "items": [{"drug_code": "OSEL75", "name": "Oseltamivir 75 mg", "dose": "1 capsule twice daily", "quantity": 10}],
            }))
            .await?;
        let record = self
            .http
            .read(&doctor, &format!("/v1/patients/{}", first.id))
            .await
            .with_context(|| format!("the edge cannot show {}'s record", first.name))?;
        let diagnoses = record["diagnoses"].as_array().map_or(0, Vec::len);
        let prescriptions = record["prescriptions"].as_array().map_or(0, Vec::len);
        ensure!(
            diagnoses == 1 && prescriptions == 1,
            "{}'s record at the edge: {record}",
            first.name
        );
        self.proved(format!(
            "14 appointments approved; {flu} influenza (J10) and {stomach} gastroenteritis (A09) diagnoses; {}'s record at the edge shows {diagnoses} diagnosis and {prescriptions} prescription",
            first.name
        ));

        self.title("Offline: the pharmacist dispenses, the accountant invoices and claims");
        let (username, _) = tour.user("pharmacy");
        let pharmacy = self
            .http
            .sign_in(&base, &username, &tour.staff_password, None)
            .await?;
        self.http
            .command(
                &pharmacy,
                "ReceiveStock",
                json!({"drug_code": "OSEL75", "name": "Oseltamivir 75 mg", "quantity": 100}),
            )
            .await?;
        self.http
            .command(
                &pharmacy,
                "DispensePrescription",
                json!({"prescription_id": prescription}),
            )
            .await?;
        self.said("100 capsules of oseltamivir received; the prescription dispensed (10 taken from stock)");
        let (username, _) = tour.user("accounts");
        let accounts = self
            .http
            .sign_in(&base, &username, &tour.staff_password, None)
            .await?;
        tour.invoice = Uuid::now_v7();
        tour.claim = Uuid::now_v7();
        self.http
            .command(&accounts, "IssueInvoice", json!({
                "invoice_id": tour.invoice, "patient_id": first.id, "appointment_id": first.appointment,
                "currency": "KES", "lines": [{"service_code": "CONSULT", "description": "consultation", "amount_cents": 250_000}],
            }))
            .await?;
        self.http
            .command(
                &accounts,
                "SubmitClaim",
                json!({
                    "claim_id": tour.claim, "invoice_id": tour.invoice, "plan_id": tour.plan,
                    "member_id": format!("JHC-{}", self.run.to_ascii_uppercase()),
                }),
            )
            .await?;
        let claim = self
            .http
            .read(&accounts, &format!("/v1/claims/{}", tour.claim))
            .await
            .context("the edge cannot show the claim")?;
        tour.claimed_cents = claim["claimed_cents"]
            .as_u64()
            .context("a claim without claimed_cents")?;
        self.said(format!(
            "invoice of KES 2,500.00 for a consultation; the plan covers 80%: a claim of {} submitted",
            kes(tour.claimed_cents)
        ));
        let status = self.edge_status(&accounts).await?;
        let pending = status["pending_events"].as_u64().unwrap_or(0);
        ensure!(pending > 0, "nothing waits to sync: {status}");
        self.proved(format!(
            "{pending} events now wait at the edge, none lost, none sent"
        ));

        self.title("The edge reconnects and syncs");
        link.restore();
        self.said("the link is restored");
        let bar = ProgressBar::new(status["last_node_seq"].as_u64().unwrap_or(0)).with_style(
            ProgressStyle::with_template("      [{bar:30}] {pos}/{len} events confirmed  {msg}")
                .expect("a template")
                .progress_chars("=> "),
        );
        let started = Instant::now();
        let deadline = started + Duration::from_secs(120);
        let last = loop {
            let status = self.edge_status(&accounts).await?;
            let last = status["last_node_seq"].as_u64().unwrap_or(0);
            let confirmed = status["confirmed_node_seq"].as_u64().unwrap_or(0);
            bar.set_length(last);
            bar.set_position(confirmed);
            bar.set_message(format!("sent {}", status["sent_node_seq"]));
            if confirmed >= last && last > 0 {
                break last;
            }
            if Instant::now() > deadline {
                bar.abandon();
                bail!("the edge has not synced after 120 s: {status}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        bar.finish();
        self.proved(format!(
            "all {last} events of the edge sent and confirmed by the audit projector in {:.1} s",
            started.elapsed().as_secs_f64()
        ));

        self.title("The insurer approves the claim; the edge sees the decision");
        let insurer = tour.insurer.clone().expect("signed in");
        self.http
            .command_when_known(
                &insurer,
                "ApproveClaim",
                json!({"claim_id": tour.claim, "approved_cents": tour.claimed_cents}),
                Duration::from_secs(60),
            )
            .await?;
        self.said(format!(
            "the insurer, at the command service, approved the {} claimed",
            kes(tour.claimed_cents)
        ));
        let claim = self
            .http
            .get_until(
                &accounts,
                &format!("/v1/claims/{}", tour.claim),
                Duration::from_secs(60),
                |c| c["status"] == json!("approved"),
            )
            .await?;
        let approved = claim["approved_cents"]
            .as_u64()
            .context("an approved claim without approved_cents")?;
        ensure!(
            approved == tour.claimed_cents,
            "the edge shows {approved} cents approved: {claim}"
        );
        self.proved(format!(
            "at the edge the claim is approved for {}, with {} steps of history (submitted, approved)",
            kes(approved),
            claim["history"].as_array().map_or(0, Vec::len)
        ));
        Ok(())
    }

    async fn edge_status(&self, session: &Session) -> Result<Value> {
        self.http
            .read(session, "/v1/sync/status")
            .await
            .context("the edge's sync status")
    }

    async fn auditor_verifies(&mut self, tour: &Tour) -> Result<()> {
        self.title("An auditor verifies the history and reads an appointment as it was");
        let (username, _) = tour.user("auditor");
        let base = self.target.command_url.clone();
        let mut auditor = self
            .http
            .sign_in(&base, &username, &tour.staff_password, None)
            .await?;
        auditor.base = self.target.query_url.clone();
        // The audit model has the insurer's decision once it has everything before it.
        self.http
            .get_until(
                &auditor,
                &format!("/v1/audit/events?aggregate_id={}", tour.claim),
                Duration::from_secs(60),
                |page| {
                    page["items"]
                        .as_array()
                        .is_some_and(|items| items.len() >= 2)
                },
            )
            .await?;
        let report = self.http.read(&auditor, "/v1/audit/verify").await?;
        ensure!(
            report["intact"] == json!(true),
            "the history is not intact: {}",
            report["first_break"]
        );
        let nodes = report["nodes"].as_array().map_or(0, Vec::len);
        self.said(format!(
            "{} events of {nodes} nodes checked: sequence, hash chain and Ed25519 signature of each",
            report["events_verified"]
        ));
        let appointment = tour.patients[0].appointment;
        let path = |at: chrono::DateTime<Utc>| {
            format!(
                "/v1/audit/aggregates/appointment/{appointment}?as_of={}",
                at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                    .replace('+', "%2B")
            )
        };
        let (hour_ago, _) = self
            .http
            .get(&auditor, &path(Utc::now() - Days::hours(1)))
            .await?;
        ensure!(
            hour_ago == reqwest::StatusCode::NOT_FOUND,
            "an hour ago the appointment existed? {hour_ago}"
        );
        let booked_at = tour.appointment_booked_at.expect("booked");
        let then = self
            .http
            .read(&auditor, &path(booked_at))
            .await
            .context("as of the booking")?;
        let now = self
            .http
            .read(&auditor, &path(Utc::now()))
            .await
            .context("as of now")?;
        let state = |v: &Value| match &v["state"]["status"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        ensure!(
            state(&then) != state(&now),
            "the appointment did not change: {then} / {now}"
        );
        self.proved(format!(
            "history intact; appointment {appointment}: an hour ago it did not exist (404), right after booking it was {}, now it is {}",
            state(&then),
            state(&now)
        ));
        Ok(())
    }

    async fn analyst_reads(&mut self, tour: &Tour) -> Result<()> {
        self.title("An analyst reads public-health counts and the anonymised stream");
        let (username, _) = tour.user("analyst");
        let base = self.target.command_url.clone();
        let mut analyst = self
            .http
            .sign_in(&base, &username, &tour.staff_password, None)
            .await?;
        analyst.base = self.target.query_url.clone();
        let report = self
            .http
            .get_until(
                &analyst,
                &format!("/v1/public-health/cases?region={}", tour.region),
                Duration::from_secs(60),
                |r| r["tables"].as_array().is_some_and(|t| t.len() >= 2),
            )
            .await?;
        let tables = report["tables"].as_array().cloned().unwrap_or_default();
        let table = |category: &str| {
            tables
                .iter()
                .find(|t| t["category"] == json!(category))
                .cloned()
                .with_context(|| format!("no {category} table in {report}"))
        };
        let min_cell = report["min_cell"].as_u64().unwrap_or(11);
        let flu = table("J10")?;
        let flu_total = &flu["cases"]["total"];
        ensure!(
            flu_total["count"] == json!(12),
            "J10 in {}: {flu_total}",
            tour.region
        );
        let stomach = table("A09")?;
        let stomach_total = &stomach["cases"]["total"];
        ensure!(
            stomach_total["suppressed"] == json!(true) && stomach_total["count"].is_null(),
            "2 cases of A09 were shown: {stomach_total}"
        );
        for t in &tables {
            for cell in t["cases"]["cells"].as_array().into_iter().flatten() {
                if let Some(n) = cell["count"].as_u64() {
                    ensure!(
                        n == 0 || n >= min_cell,
                        "a cell of {n} < {min_cell} was shown: {cell}"
                    );
                }
            }
        }
        self.said(format!(
            "week {}, region {}: influenza (J10) 12 cases shown; gastroenteritis (A09) suppressed: null, \"suppressed\": true (fewer than {min_cell})",
            flu["iso_week"].as_str().unwrap_or("?"),
            tour.region
        ));

        let js = self.jetstream().await?;
        let stream = js
            .get_stream(self.names.public_stream())
            .await
            .context("the public stream")?;
        let subject = format!("{}.public.cases.*.{}", self.names.prefix(), tour.region);
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
                filter_subject: subject.clone(),
                ..Default::default()
            })
            .await
            .context("subscribing to the public stream")?;
        let mut messages = consumer
            .messages()
            .await
            .context("reading the public stream")?;
        let (mut received, mut latest) = (0, String::new());
        while let Ok(Some(Ok(message))) =
            tokio::time::timeout(Duration::from_secs(2), messages.next()).await
        {
            received += 1;
            latest = String::from_utf8_lossy(&message.payload).into_owned();
            for p in &tour.patients {
                for identifier in [p.id.to_string(), p.name.clone(), p.national_id.clone()] {
                    ensure!(
                        !latest.contains(&identifier),
                        "the public stream carried {identifier}"
                    );
                }
            }
        }
        ensure!(received > 0, "nothing on {subject}");
        ensure!(
            latest.contains("J10"),
            "the latest public message has no J10 counts: {latest}"
        );
        self.proved(format!(
            "public counts shown only from {min_cell} up; {received} message{} received on {subject}, none with a name, national id or patient id",
            if received == 1 { "" } else { "s" }
        ));
        Ok(())
    }
}

/// Kenyan shillings from cents: `KES 2,000.00`.
fn kes(cents: u64) -> String {
    let units = (cents / 100).to_string();
    let mut grouped = String::new();
    for (i, c) in units.chars().enumerate() {
        if i > 0 && (units.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("KES {grouped}.{:02}", cents % 100)
}

fn count_events(answer: &Value) -> usize {
    answer["events"].as_array().map_or(0, Vec::len)
}

fn plan_body(plan: Uuid, insurer: Uuid) -> Value {
    json!({
        "plan_id": plan, "insurer_id": insurer, "name": "Family Care", "currency": "KES",
        "premium_cents": 1_200_000,
        "coverage": [
            {"service_code": "CONSULT", "percent": 80, "cap_cents": 500_000},
            {"service_code": "LAB", "percent": 100, "cap_cents": 300_000},
        ],
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn shillings_are_grouped_by_thousands() {
        assert_eq!(super::kes(200_000), "KES 2,000.00");
        assert_eq!(super::kes(5), "KES 0.05");
        assert_eq!(super::kes(123_456_789), "KES 1,234,567.89");
    }
}
