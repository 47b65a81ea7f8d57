//! `hms bench edge`: the edge's command throughput and latency over HTTP beside a bare axum
//! handler doing the same parsing and nothing else, measured in the same run on the same
//! machine; then the edge's memory and start-up time over a large log.

use anyhow::{Context, Result, bail};
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use clap::{Args, Subcommand};
use domain::values::*;
use edge_agent::EdgeConfig;
use edge_agent::fixture::DevHospital;
use platform::token::Claims;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use uuid::Uuid;

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: BenchWhat,
}

#[derive(Debug, Subcommand)]
enum BenchWhat {
    /// Commands over HTTP against the edge and a bare axum handler; memory and start-up time
    /// over a large log.
    Edge(EdgeBench),
    /// An edge's backlog replayed into a fresh JetStream stream, beside a raw pipelined publish
    /// of the same bytes; commands keep being answered during the replay.
    Sync(SyncBench),
    /// A history rebuilt into all four read models, beside a raw batched insert of as many
    /// rows into a table of the audit events' shape.
    Projections(crate::bench_projections::ProjectionsBench),
    /// Central commands on existing aggregates from concurrent clients, beside raw JetStream
    /// publishes with the same expected-sequence header.
    Command(crate::bench_command::CommandBench),
    /// A patient's record by id and a doctor's day of appointments from the query API under
    /// concurrent connections, beside a bare axum handler answering as many bytes.
    Query(crate::bench_query::QueryBench),
}

#[derive(Debug, Args)]
struct SyncBench {
    /// Events in the backlog.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// The NATS server.
    #[arg(long, env = "HMS_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
}

#[derive(Debug, Args)]
struct EdgeBench {
    /// Seconds of load on each server.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Concurrent connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Events in the log for the memory and start-up figures (0 skips them).
    #[arg(long, default_value_t = 1_000_000)]
    log_events: u64,
    /// Measure only the edge, without the raw limit (for profiling; prints no ratio).
    #[arg(long)]
    edge_only: bool,
}

pub fn run(args: BenchArgs) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    match args.what {
        BenchWhat::Edge(bench) => runtime.block_on(edge(bench)),
        BenchWhat::Sync(bench) => runtime.block_on(sync(bench)),
        BenchWhat::Projections(bench) => runtime.block_on(crate::bench_projections::run(bench)),
        BenchWhat::Command(bench) => runtime.block_on(crate::bench_command::run(bench)),
        BenchWhat::Query(bench) => runtime.block_on(crate::bench_query::run(bench)),
    }
}

/// What one load run measured.
pub(crate) struct Figures {
    pub(crate) commands: u64,
    pub(crate) errors: u64,
    pub(crate) seconds: f64,
    pub(crate) latencies: Vec<Duration>,
    /// The CPU time this process used during the run, where it was measured.
    pub(crate) cpu: Option<CpuTime>,
}

impl Figures {
    /// The figures of a run from each client's `(done, errors, latencies)`.
    pub(crate) fn merge(parts: Vec<(u64, u64, Vec<Duration>)>, seconds: f64) -> Figures {
        let mut figures = Figures {
            commands: 0,
            errors: 0,
            seconds,
            latencies: Vec::new(),
            cpu: None,
        };
        for (commands, errors, latencies) in parts {
            figures.commands += commands;
            figures.errors += errors;
            figures.latencies.extend(latencies);
        }
        figures.latencies.sort();
        figures
    }

    /// Of two runs of the raw limit (before and after the measured one: this machine's speed
    /// drifts), the faster, which is the limit a service is held to.
    pub(crate) fn faster(self, other: Figures) -> Figures {
        if other.rate() > self.rate() {
            other
        } else {
            self
        }
    }

    pub(crate) fn rate(&self) -> f64 {
        self.commands as f64 / self.seconds
    }

    /// CPU microseconds per command: in this process, and in the named part of the work.
    pub(crate) fn cpu_per_command(&self) -> Option<(f64, f64)> {
        let cpu = self.cpu?;
        let per = |d: Duration| d.as_secs_f64() * 1e6 / self.commands.max(1) as f64;
        Some((per(cpu.process), per(cpu.named)))
    }

    pub(crate) fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let index = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[index]
    }

    fn line(&self, name: &str) -> String {
        self.line_in(name, "commands")
    }

    /// One line of a report: rate, p50, p99 and counts, counting in `unit`.
    pub(crate) fn line_in(&self, name: &str, unit: &str) -> String {
        format!(
            "{name:<34} {:>9.0} {unit}/s   p50 {:>6.2} ms   p99 {:>6.2} ms   ({} {unit}, {} errors)",
            self.rate(),
            self.percentile(0.50).as_secs_f64() * 1e3,
            self.percentile(0.99).as_secs_f64() * 1e3,
            self.commands,
            self.errors
        )
    }
}

/// The command bodies the load sends: a registration, then a booking of that patient in a slot
/// no other booking takes (doctor and time from a shared counter), alternately.
struct Workload {
    doctors: Vec<UserId>,
    next_slot: AtomicU64,
}

impl Workload {
    fn registration(&self) -> (String, serde_json::Value) {
        let patient = Uuid::now_v7().to_string();
        let body = json!({"command_id": Uuid::now_v7(), "type": "RegisterPatient",
            "patient_id": patient, "name": "Amina Otieno", "birth_date": "1984-03-12",
            "sex": "female", "national_id": format!("B{}", &patient[24..]),
            "phone": "+254712345678", "region_code": "KE-30"});
        (patient, body)
    }

    fn booking(&self, patient: &str) -> serde_json::Value {
        let slot = self.next_slot.fetch_add(1, Ordering::Relaxed);
        let doctor = self.doctors[(slot % self.doctors.len() as u64) as usize];
        let starts_at = chrono::DateTime::parse_from_rfc3339("2027-01-01T00:00:00Z")
            .expect("a time")
            .to_utc()
            + chrono::Duration::minutes(30 * (slot / self.doctors.len() as u64) as i64);
        json!({"command_id": Uuid::now_v7(), "type": "BookAppointment",
            "appointment_id": Uuid::now_v7(), "patient_id": patient, "doctor_id": doctor,
            "starts_at": starts_at.to_rfc3339(), "duration_minutes": 30, "reason": "Check-up"})
    }
}

async fn load(url: &str, token: &str, workload: Arc<Workload>, bench: &EdgeBench) -> Figures {
    http_load(
        bench.connections,
        bench.seconds,
        StatusCode::CREATED,
        |_| {
            let (url, token, workload) = (url.to_owned(), token.to_owned(), workload.clone());
            let mut patient: Option<String> = None;
            move |client: &reqwest::Client| {
                let body = match patient.take() {
                    Some(p) => workload.booking(&p),
                    None => {
                        let (p, body) = workload.registration();
                        patient = Some(p);
                        body
                    }
                };
                client
                    .post(&url)
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(body.to_string())
            }
        },
    )
    .await
}

/// HTTP load from `connections` clients for `seconds`, each on one connection of its own kept
/// alive, sending one request at a time: the next that its `requests` (made by `client(i)`
/// for client `i`) builds. A request counts when it is answered `expect` and its body read;
/// anything else is an error.
pub(crate) async fn http_load<R>(
    connections: usize,
    seconds: f64,
    expect: StatusCode,
    mut client: impl FnMut(usize) -> R,
) -> Figures
where
    R: FnMut(&reqwest::Client) -> reqwest::RequestBuilder + Send + 'static,
{
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..connections {
        let mut requests = client(index);
        tasks.spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .expect("a client");
            let (mut done, mut errors, mut latencies) = (0u64, 0u64, Vec::new());
            while Instant::now() < deadline {
                let request = requests(&client);
                let sent = Instant::now();
                match request.send().await {
                    Ok(r) if r.status() == expect => match r.bytes().await {
                        Ok(_) => {
                            latencies.push(sent.elapsed());
                            done += 1;
                        }
                        Err(_) => errors += 1,
                    },
                    _ => errors += 1,
                }
            }
            (done, errors, latencies)
        });
    }
    let mut parts = Vec::new();
    while let Some(done) = tasks.join_next().await {
        parts.push(done.expect("a load task"));
    }
    Figures::merge(parts, started.elapsed().as_secs_f64())
}

async fn bare_run(bench: &EdgeBench) -> Result<Figures> {
    let (bare_addr, bare_server) = bare_axum().await?;
    let workload = Arc::new(Workload {
        doctors: vec![UserId::from_uuid(Uuid::now_v7())],
        next_slot: AtomicU64::new(0),
    });
    let before = CpuTime::now("");
    let mut figures = load(
        &format!("http://{bare_addr}/v1/commands"),
        "no-token",
        workload,
        bench,
    )
    .await;
    figures.cpu = CpuTime::since(before, "");
    bare_server.abort();
    Ok(figures)
}

/// The raw limit: axum parsing the same command bodies and answering 201, storing nothing.
async fn bare_axum() -> Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    serve_loopback(axum::Router::new().route(
        "/v1/commands",
        post(|body: Bytes| async move {
            let value: serde_json::Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(_) => return (StatusCode::BAD_REQUEST, String::new()),
            };
            match domain::wire::parse_command(&value, &mut |_| unreachable!("no passwords")) {
                Ok(parsed) => (
                    StatusCode::CREATED,
                    json!({"command_id": parsed.command_id, "events": []}).to_string(),
                ),
                Err(_) => (StatusCode::UNPROCESSABLE_ENTITY, String::new()),
            }
        }),
    ))
    .await
}

/// Serves `app` on a free loopback port, as the raw limit a benchmark holds a service to.
pub(crate) async fn serve_loopback(
    app: axum::Router,
) -> Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, server))
}

async fn edge(bench: EdgeBench) -> Result<()> {
    println!(
        "hms bench edge: {} connections, {:.1} s of load per server, on {} cores",
        bench.connections,
        bench.seconds,
        cores()
    );
    // The raw limit, measured before and after the edge: this machine's speed drifts, and the
    // faster of the two is the limit the edge is held to.
    let bare_before = if bench.edge_only {
        None
    } else {
        Some(bare_run(&bench).await?)
    };
    // The edge: every 201 is fsynced in its log.
    let dir = tempfile::tempdir().context("a temporary data directory")?;
    let hospital = HospitalId::from_uuid(Uuid::now_v7());
    let mut config = EdgeConfig::new(dir.path().to_owned());
    config.listen = "127.0.0.1:0".parse()?;
    config.hospital_id = Some(hospital.as_uuid());
    let edge = edge_agent::start(config).await?;
    let dev = DevHospital::new(hospital, 50);
    edge.writer
        .receive(dev.history.clone())
        .await
        .map_err(|e| anyhow::anyhow!("seeding the edge: {e}"))?;
    let token = receptionist_token(dir.path(), &dev)?;
    let workload = Arc::new(Workload {
        doctors: dev
            .staff
            .iter()
            .filter(|(r, _)| *r == Role::Doctor)
            .map(|(_, u)| *u)
            .collect(),
        next_slot: AtomicU64::new(0),
    });
    let batches_before = edge.writer.progress().batches.load(Ordering::Relaxed);
    let cpu_before = CpuTime::now(WRITER_THREAD);
    let mut measured = load(
        &format!("http://{}/v1/commands", edge.addr),
        &token,
        workload,
        &bench,
    )
    .await;
    measured.cpu = CpuTime::since(cpu_before, WRITER_THREAD);
    let batches = edge.writer.progress().batches.load(Ordering::Relaxed) - batches_before;
    edge.stop().await?;
    let bare = match bare_before {
        None => None,
        Some(before) => {
            let after = bare_run(&bench).await?;
            println!("{}", before.line("bare axum handler, before"));
            println!("{}", after.line("bare axum handler, after"));
            Some(before.faster(after))
        }
    };

    println!("{}", measured.line("edge, fsynced (synchronous=FULL)"));
    if let Some(bare) = &bare {
        println!(
            "ratio edge / bare axum: {:.2} of the throughput (target >= 0.50); edge p99 {:.2} ms (target < 25 ms)",
            measured.rate() / bare.rate(),
            measured.percentile(0.99).as_secs_f64() * 1e3
        );
    }
    println!(
        "group commit: {} commands in {} commits ({:.1} per fsync)",
        measured.commands,
        batches,
        measured.commands as f64 / batches.max(1) as f64
    );
    if let Some(bare) = &bare {
        cpu_budget(&measured, bare);
    }
    if measured.errors > 0 {
        bail!("{} edge commands failed", measured.errors);
    }
    if bench.log_events > 0 {
        large_log(bench.log_events).await?;
    }
    Ok(())
}

/// The name of the edge's writer thread, which decides, seals and stores every command in turn.
const WRITER_THREAD: &str = "edge-writer";

/// Where the edge's CPU goes, beside the bare handler's: what limits the ratio on this machine.
/// The load generator runs in this process for both, so both figures include it.
fn cpu_budget(edge: &Figures, bare: &Figures) {
    let (Some((edge_cpu, writer_cpu)), Some((bare_cpu, _))) =
        (edge.cpu_per_command(), bare.cpu_per_command())
    else {
        println!("CPU per command: not measured (needs Linux's /proc)");
        return;
    };
    let cores = cores() as f64;
    let all_cores = cores * 1e6 / edge_cpu;
    let one_writer = 1e6 / writer_cpu;
    println!(
        "CPU per command, load generator included: bare axum {bare_cpu:.0} us, edge {edge_cpu:.0} us, \
         of which {writer_cpu:.0} us on the edge's one writer thread (busy {:.0} % of the run)",
        100.0 * edge.cpu.map_or(0.0, |c| c.named.as_secs_f64()) / edge.seconds
    );
    println!(
        "so the edge cannot pass {all_cores:.0} commands/s with all {cores} cores busy (ratio {:.2}), \
         nor {one_writer:.0} commands/s on its one writer thread, even if the disk never made it wait \
         (ratio {:.2})",
        all_cores / bare.rate(),
        one_writer / bare.rate()
    );
}

/// The cores this machine gives the process.
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// CPU time used by this process (every thread, those ended included) and by one named part of
/// the work: this process's live threads of one name, or other processes of one name. Read
/// from Linux's `/proc`, in its clock ticks (USER_HZ, 100 a second).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CpuTime {
    pub(crate) process: Duration,
    pub(crate) named: Duration,
}

impl CpuTime {
    /// Now, with this process's live threads named `thread_name` as the named part; `None`
    /// where `/proc` cannot be read.
    pub(crate) fn now(thread_name: &str) -> Option<CpuTime> {
        Some(CpuTime {
            process: process_cpu()?,
            named: named_cpu("/proc/self/task", thread_name)?.1,
        })
    }

    /// What was used from `before` until now.
    pub(crate) fn since(before: Option<CpuTime>, thread_name: &str) -> Option<CpuTime> {
        let (before, now) = (before?, CpuTime::now(thread_name)?);
        Some(CpuTime {
            process: now.process.saturating_sub(before.process),
            named: now.named.saturating_sub(before.named),
        })
    }
}

/// CPU time used so far by this process, every thread included (those ended too).
pub(crate) fn process_cpu() -> Option<Duration> {
    Some(ticks(&std::fs::read_to_string("/proc/self/stat").ok()?)?.1)
}

/// CPU time used so far by every process of this name on the machine (the local NATS server,
/// say); `None` where `/proc` cannot be read or no such process runs.
pub(crate) fn processes_cpu(name: &str) -> Option<Duration> {
    match named_cpu("/proc", name)? {
        (0, _) => None,
        (_, used) => Some(used),
    }
}

/// How many entries of a `/proc` directory of processes (or of one process's threads, `task`)
/// are named `name`, and the CPU time they used so far.
fn named_cpu(dir: &str, name: &str) -> Option<(usize, Duration)> {
    let (mut found, mut used) = (0, Duration::ZERO);
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let numbered = entry
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit());
        if numbered
            && let Some((named, time)) = std::fs::read_to_string(entry.path().join("stat"))
                .ok()
                .as_deref()
                .and_then(ticks)
            && named == name
        {
            found += 1;
            used += time;
        }
    }
    Some((found, used))
}

/// The name and the user plus system time in a `/proc/.../stat` line.
fn ticks(stat: &str) -> Option<(&str, Duration)> {
    // The name is in parentheses and may hold spaces or parentheses itself.
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    // After the name: state, then 10 fields, then utime and stime.
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some((
        &stat[open + 1..close],
        Duration::from_millis((user + system) * 10),
    ))
}

/// A fresh data directory with the development hospital and `events` registrations in its log.
pub(crate) async fn filled_log(
    events: u64,
) -> Result<(tempfile::TempDir, EdgeConfig, DevHospital)> {
    let dir = tempfile::tempdir().context("a temporary data directory")?;
    let hospital = HospitalId::from_uuid(Uuid::now_v7());
    let mut config = EdgeConfig::new(dir.path().to_owned());
    config.hospital_id = Some(hospital.as_uuid());
    let dev = DevHospital::new(hospital, 1);
    edge_agent::service::import(&config, dev.history.clone()).await?;

    let filled = Instant::now();
    let fill_config = config.clone();
    tokio::task::spawn_blocking(move || -> Result<()> {
        let mut log = edge_agent::service::open_log(&fill_config)?;
        edge_agent::fixture::fill_backlog(&mut log, hospital, events, |written| {
            if written.is_multiple_of(100_000) || written == events {
                eprintln!("  log filled: {written}/{events} events");
            }
        })?;
        Ok(())
    })
    .await??;
    println!(
        "log of {events} events written in {:.1} s",
        filled.elapsed().as_secs_f64()
    );
    Ok((dir, config, dev))
}

/// Starts `hms edge` on a log of `events` events as its own process and measures the time until
/// it answers and its resident memory after some commands.
async fn large_log(events: u64) -> Result<()> {
    let (dir, _config, dev) = filled_log(events).await?;

    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let started = Instant::now();
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["edge", "--offline"])
        .env("HMS_DATA_DIR", dir.path())
        .env("HMS_EDGE_LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("starting hms edge")?;
    let client = reqwest::Client::new();
    let health = format!("http://127.0.0.1:{port}/healthz");
    loop {
        if client.get(&health).send().await.is_ok() {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            bail!("the edge did not answer within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let start_up = started.elapsed();
    let token = receptionist_token(dir.path(), &dev)?;
    let workload = Workload {
        doctors: vec![dev.user(Role::Doctor)],
        next_slot: AtomicU64::new(0),
    };
    for _ in 0..1000 {
        let (patient, body) = workload.registration();
        for body in [body, workload.booking(&patient)] {
            let r = client
                .post(format!("http://127.0.0.1:{port}/v1/commands"))
                .bearer_auth(&token)
                .body(body.to_string())
                .send()
                .await?;
            if r.status() != StatusCode::CREATED {
                bail!("a command on the large log failed: {}", r.status());
            }
        }
    }
    let rss_kib = resident_kib_of(child.id()).context("reading the edge's VmRSS")?;
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    println!(
        "edge over a log of {events} events: start-up {:.0} ms (target < 2000 ms), resident memory {:.1} MiB after 2,000 more commands (target < 150 MiB)",
        start_up.as_secs_f64() * 1e3,
        rss_kib as f64 / 1024.0
    );
    Ok(())
}

async fn sync(bench: SyncBench) -> Result<()> {
    println!(
        "hms bench sync: a backlog of {} events replayed into JetStream at {}",
        bench.events, bench.nats_url
    );
    let (dir, mut config, dev) = filled_log(bench.events).await?;
    let client = async_nats::connect(bench.nats_url.as_str())
        .await
        .with_context(|| format!("connecting to {}", bench.nats_url))?;
    let js = async_nats::jetstream::new(client);

    // The raw limit: the same bytes, published with the same pipelining, into a fresh stream.
    let bodies: Vec<(String, String, bytes::Bytes)> = {
        let conn = rusqlite::Connection::open(config.db_path())?;
        let mut stmt = conn.prepare(
            "SELECT event_id, org_id, aggregate_type, aggregate_id, envelope FROM events ORDER BY node_seq",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                format!(
                    "{}.{}.{}",
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?
                ),
                bytes::Bytes::from(r.get::<_, String>(4)?),
            ))
        })?;
        rows.collect::<Result<_, _>>()?
    };
    let bytes_each = bodies.iter().map(|b| b.2.len()).sum::<usize>() / bodies.len().max(1);
    // This machine's raw rate drifts: it is measured before and after the replay, and the
    // replay is compared with their mean.
    settle();
    let raw_before = raw_publish(&js, &bodies).await?;

    // The edge's replay, through its sync task, while staff keep sending commands.
    settle();
    let names = platform::streams::Names::new(&bench_prefix())?;
    config.listen = "127.0.0.1:0".parse()?;
    config.sync = Some(edge_agent::sync::SyncConfig::new(
        bench.nats_url.clone(),
        names.clone(),
    ));
    let started = Instant::now();
    let edge = edge_agent::start(config).await?;
    let token = receptionist_token(dir.path(), &dev)?;
    let url = format!("http://{}/v1/sync/status", edge.addr);
    let commands_url = format!("http://{}/v1/commands", edge.addr);
    let client = reqwest::Client::new();
    let workload = Workload {
        doctors: vec![dev.user(Role::Doctor)],
        next_slot: AtomicU64::new(0),
    };
    let mut latencies = Vec::new();
    let replayed = loop {
        let status: serde_json::Value = client
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await?
            .json()
            .await?;
        let sent = status["sent_node_seq"].as_u64().unwrap_or(0);
        if sent >= bench.events {
            break started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("the replay did not finish within 10 minutes: {status}");
        }
        // A command while the replay runs: it must be answered as usual.
        let (_, body) = workload.registration();
        let sent_at = Instant::now();
        let r = client
            .post(&commands_url)
            .bearer_auth(&token)
            .body(body.to_string())
            .send()
            .await?;
        if r.status() != StatusCode::CREATED {
            bail!("a command during the replay failed: {}", r.status());
        }
        latencies.push(sent_at.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    edge.stop().await?;
    let edge_rate = bench.events as f64 / replayed.as_secs_f64();
    crate::bench_projections::delete_streams(&js, &names).await;
    settle();
    let raw_after = raw_publish(&js, &bodies).await?;
    let raw_rate = (raw_before + raw_after) / 2.0;
    latencies.sort();
    let p99 = latencies
        .get((latencies.len() as f64 * 0.99) as usize)
        .or(latencies.last())
        .copied()
        .unwrap_or_default();
    println!(
        "raw pipelined publish (256 acks in flight) {raw_rate:>9.0} events/s   ({bytes_each} bytes each; {raw_before:.0} before the replay, {raw_after:.0} after)"
    );
    println!("edge replay of its log                    {edge_rate:>9.0} events/s");
    println!(
        "ratio edge / raw publish: {:.2} (target >= 0.80); {} commands answered during the replay, p99 {:.2} ms",
        edge_rate / raw_rate,
        latencies.len(),
        p99.as_secs_f64() * 1e3
    );
    Ok(())
}

/// The raw limit: `bodies` published with the sync's pipelining (256 acknowledgements in
/// flight) into a fresh stream, which is deleted after. Returns messages per second.
async fn raw_publish(
    js: &async_nats::jetstream::Context,
    bodies: &[(String, String, bytes::Bytes)],
) -> Result<f64> {
    let raw_names = platform::streams::Names::new(&bench_prefix())?;
    platform::streams::ensure_events_stream(
        js,
        &raw_names,
        platform::streams::DEFAULT_DUPLICATE_WINDOW,
    )
    .await?;
    let started = Instant::now();
    let mut in_flight = std::collections::VecDeque::new();
    for (event_id, subject, body) in bodies {
        if in_flight.len() >= 256 {
            let ack: async_nats::jetstream::context::PublishAckFuture =
                in_flight.pop_front().expect("not empty");
            ack.await?;
        }
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", event_id.as_str());
        in_flight.push_back(
            js.publish_with_headers(
                format!("{}.events.{subject}", raw_names.prefix()),
                headers,
                body.clone(),
            )
            .await?,
        );
    }
    for ack in in_flight {
        ack.await?;
    }
    let rate = bodies.len() as f64 / started.elapsed().as_secs_f64();
    js.delete_stream(raw_names.events_stream()).await?;
    Ok(rate)
}

/// Writes out the page cache's dirty pages, so that a timed phase does not pay for the writes
/// of the one before it (the log fill writes about a gigabyte per million events).
pub(crate) fn settle() {
    if let Err(e) = std::process::Command::new("sync").status() {
        eprintln!("  (sync could not run: {e}; the phases may share write-back)");
    }
}

fn bench_prefix() -> String {
    format!("bench{}", &Uuid::now_v7().simple().to_string()[20..])
}

/// A token of the development hospital's receptionist, signed with the keys the edge made in
/// its data directory.
pub(crate) fn receptionist_token(data_dir: &std::path::Path, dev: &DevHospital) -> Result<String> {
    let signer = platform::keys::resolve_jwt_keys(None, None, data_dir)?
        .load()?
        .signer()
        .context("the token key")?;
    Ok(signer.mint(&Claims::new(
        dev.user(Role::Receptionist),
        dev.hospital_id.into(),
        vec![Role::Receptionist],
        None,
        3600,
        platform::token::unix_now(),
    )))
}

/// A process's resident memory in KiB (`VmRSS` of `/proc/<pid>/status`).
pub(crate) fn resident_kib_of(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// This process's resident memory in KiB (0 if unknown).
pub(crate) fn resident_kib() -> u64 {
    resident_kib_of(std::process::id()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_its_name_and_cpu_time_even_with_parentheses_in_the_name() {
        let line = "4242 (edge (x) w) S 1 4242 4242 0 -1 4194368 950 0 0 0 123 45 0 0 20 0 9 0";
        let (name, used) = ticks(line).expect("a stat line");
        assert_eq!(name, "edge (x) w");
        assert_eq!(used, Duration::from_millis((123 + 45) * 10));
        assert!(ticks("4242 (short) S 1 2").is_none());
    }

    #[test]
    fn this_process_and_its_named_threads_are_measured() {
        let before = CpuTime::now("cpu-spinner").expect("/proc is readable on Linux");
        let (spun, measured) = (std::sync::mpsc::channel(), std::sync::mpsc::channel::<()>());
        let spinner = std::thread::Builder::new()
            .name("cpu-spinner".into())
            .spawn(move || {
                // Spins until it has itself used 200 ms of CPU, however busy the machine is.
                let own = || {
                    ticks(&std::fs::read_to_string("/proc/thread-self/stat").unwrap())
                        .unwrap()
                        .1
                };
                let mut x = 0u64;
                while own() < Duration::from_millis(200) {
                    for _ in 0..100_000 {
                        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                    }
                }
                spun.0.send(()).unwrap();
                // Alive until it has been measured.
                measured.1.recv().unwrap();
            })
            .expect("a thread");
        spun.1.recv().expect("the spinner spun");
        let used = CpuTime::since(Some(before), "cpu-spinner").expect("measured");
        measured.0.send(()).unwrap();
        spinner.join().expect("the spinner ends");
        assert!(used.named >= Duration::from_millis(200), "{used:?}");
        assert!(used.process >= used.named, "{used:?}");
    }
}
