//! `hms bench command`: the command service under concurrent clients deciding commands on
//! existing aggregates (insurers updating their plans' terms: each a read of the aggregate, a
//! decision, a signed event appended with `Nats-Expected-Last-Subject-Sequence`), beside raw
//! JetStream publishes with the same header from as many concurrent publishers, measured in the
//! same run.

use anyhow::{Context, Result, bail};
use clap::Args;
use domain::values::{OrgId, Role, UserId};
use futures::StreamExt;
use platform::streams::Names;
use platform::token::Claims;
use serde_json::json;
use std::time::{Duration, Instant};
use uuid::Uuid;

use crate::bench::{CpuTime, Figures, cores, process_cpu, processes_cpu};

#[derive(Debug, Args)]
pub struct CommandBench {
    /// Seconds of load on each side.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Concurrent clients (and raw publishers).
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Aggregates the commands go to (plans), shared out among the clients.
    #[arg(long, default_value_t = 1000)]
    aggregates: usize,
    /// States of evictable aggregates the service keeps in memory (`HMS_STATE_CACHE`).
    #[arg(long, default_value_t = command_service::DEFAULT_STATE_CACHE)]
    state_cache: usize,
    #[arg(long, env = "HMS_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
}

pub async fn run(bench: CommandBench) -> Result<()> {
    if bench.clients == 0 || bench.aggregates < bench.clients {
        bail!("--aggregates must be at least --clients, and --clients at least 1");
    }
    let raw = raw_publishes(&bench).await?;
    let service = service_run(&bench).await?;
    let raw_cpu = raw.cpu_per_command();
    let service_cpu = service.cpu_per_command();
    println!(
        "hms bench command: {} concurrent clients, {:.0} s each\n",
        bench.clients, bench.seconds
    );
    println!(
        "{}",
        raw.line_in("raw JetStream publish, expected-seq", "msgs")
    );
    println!(
        "{}",
        service.line_in("command service, UpdatePlanTerms", "commands")
    );
    println!(
        "\nratio command service / raw publish: {:.2} (target 0.60)",
        service.rate() / raw.rate().max(1.0)
    );
    if let (Some((raw_here, raw_nats)), Some((service_here, service_nats))) = (raw_cpu, service_cpu)
    {
        let cores = cores() as f64;
        let ceiling = cores * 1e6 / (service_here + service_nats);
        println!(
            "CPU per message, clients included: raw publish {raw_here:.0} us here and {raw_nats:.0} us in nats-server; \
             command service {service_here:.0} us here and {service_nats:.0} us in nats-server"
        );
        println!(
            "so the command service cannot pass {ceiling:.0} commands/s with all {cores} cores busy (ratio {:.2})",
            ceiling / raw.rate().max(1.0)
        );
    }
    if service.errors > 0 || raw.errors > 0 {
        bail!(
            "{} commands and {} raw publishes failed",
            service.errors,
            raw.errors
        );
    }
    Ok(())
}

/// Each publisher owns some subjects and appends to them in turn, each publish carrying the
/// subject's last sequence and awaited before the next (as a client awaits its answer).
async fn raw_publishes(bench: &CommandBench) -> Result<Figures> {
    let names = Names::new(&bench_prefix())?;
    let client = async_nats::connect(&bench.nats_url)
        .await
        .with_context(|| format!("connecting to {}", bench.nats_url))?;
    let js = async_nats::jetstream::new(client);
    platform::streams::ensure_events_stream(
        &js,
        &names,
        platform::streams::DEFAULT_DUPLICATE_WINDOW,
    )
    .await?;
    let body = bytes::Bytes::from(vec![b'x'; 600]);
    let deadline = Instant::now() + Duration::from_secs_f64(bench.seconds);
    let started = Instant::now();
    let cpu_before = (process_cpu(), processes_cpu(NATS_SERVER));
    let mut tasks = tokio::task::JoinSet::new();
    let per_client = bench.aggregates / bench.clients;
    for client_index in 0..bench.clients {
        let (js, body, prefix) = (js.clone(), body.clone(), names.prefix().to_owned());
        tasks.spawn(async move {
            let subjects: Vec<String> = (0..per_client)
                .map(|i| format!("{prefix}.events.x.plan.{client_index}-{i}"))
                .collect();
            let mut last = vec![0u64; subjects.len()];
            let (mut done, mut errors, mut latencies) = (0u64, 0u64, Vec::new());
            let mut i = 0;
            while Instant::now() < deadline {
                let k = i % subjects.len();
                i += 1;
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", Uuid::now_v7().to_string().as_str());
                headers.insert(
                    "Nats-Expected-Last-Subject-Sequence",
                    last[k].to_string().as_str(),
                );
                let sent = Instant::now();
                let ack = match js
                    .publish_with_headers(subjects[k].clone(), headers, body.clone())
                    .await
                {
                    Ok(future) => future.await,
                    Err(e) => Err(e),
                };
                match ack {
                    Ok(ack) => {
                        last[k] = ack.sequence;
                        latencies.push(sent.elapsed());
                        done += 1;
                    }
                    Err(_) => errors += 1,
                }
            }
            (done, errors, latencies)
        });
    }
    let mut parts = Vec::new();
    while let Some(part) = tasks.join_next().await {
        parts.push(part?);
    }
    let mut figures = Figures::merge(parts, started.elapsed().as_secs_f64());
    figures.cpu = cpu_with_nats(cpu_before);
    let _ = js.delete_stream(names.events_stream()).await;
    Ok(figures)
}

/// The name of the NATS server's processes, whose CPU both sides of the benchmark spend.
const NATS_SERVER: &str = "nats-server";

/// The CPU time this process and the NATS servers on this machine used since `before`, as it
/// was then (`process_cpu`, `processes_cpu(NATS_SERVER)`); unknown when NATS runs elsewhere.
fn cpu_with_nats(before: (Option<Duration>, Option<Duration>)) -> Option<CpuTime> {
    Some(CpuTime {
        process: process_cpu()?.saturating_sub(before.0?),
        named: processes_cpu(NATS_SERVER)?.saturating_sub(before.1?),
    })
}

/// The command service on a fresh prefix: an insurer with plans, then every client updates
/// its plans' terms in turn.
async fn service_run(bench: &CommandBench) -> Result<Figures> {
    let data = tempfile::tempdir()?;
    let names = Names::new(&bench_prefix())?;
    let mut config = command_service::Config::new(data.path().to_owned(), names.clone());
    config.listen = "127.0.0.1:0".parse()?;
    config.nats_url = bench.nats_url.clone();
    config.require_mfa = false;
    config.state_cache = bench.state_cache.max(1);
    let running = command_service::start(config.clone()).await?;
    let url = format!("http://{}/v1/commands", running.addr);
    let signer = running.shared.signer.clone();
    let token = |org: Uuid, role: Role| {
        signer.mint(&Claims::new(
            UserId::from_uuid(Uuid::now_v7()),
            OrgId::from_uuid(org),
            vec![role],
            None,
            3600,
            platform::token::unix_now(),
        ))
    };
    let http = reqwest::Client::new();
    let insurer = Uuid::now_v7();
    let admin = token(Uuid::nil(), Role::Admin);
    let insurer_token = token(insurer, Role::Insurer);
    let post = |token: String, body: serde_json::Value| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let r = http
                .post(&url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await?;
            anyhow::ensure!(
                r.status() == 201,
                "setup command refused: {}",
                r.text().await?
            );
            Ok::<(), anyhow::Error>(())
        }
    };
    post(
        admin,
        json!({"command_id": Uuid::now_v7(), "type": "RegisterInsurer",
        "insurer_id": insurer, "name": "Bench Mutual"}),
    )
    .await?;
    let plans: Vec<Uuid> = (0..bench.aggregates).map(|_| Uuid::now_v7()).collect();
    let publish_plans = plans.iter().map(|plan| {
        post(
            insurer_token.clone(),
            json!({"command_id": Uuid::now_v7(), "type": "PublishPlan",
            "plan_id": plan, "insurer_id": insurer, "name": "Afya Gold", "currency": "KES",
            "premium_cents": 250000, "coverage": [{"service_code": "CONSULT", "percent": 80,
            "cap_cents": 1000000}]}),
        )
    });
    // As many at once as the load has clients: more would only queue (and run out of sockets).
    let setup = Instant::now();
    let total = plans.len();
    let mut published = 0usize;
    let mut answers = futures::stream::iter(publish_plans).buffer_unordered(bench.clients);
    while let Some(answer) = answers.next().await {
        answer?;
        published += 1;
        if published.is_multiple_of(50_000) || published == total {
            eprintln!(
                "  setup: {published}/{total} plans published ({:.0} s)",
                setup.elapsed().as_secs_f64()
            );
        }
    }
    drop(answers);
    let (known, cached) = {
        let known = running.shared.known.read().expect("known");
        (known.aggregate_count(), known.cached_count())
    };
    let rss_after_setup = crate::bench::resident_kib();

    let per_client = bench.aggregates / bench.clients;
    let cpu_before = (process_cpu(), processes_cpu(NATS_SERVER));
    let mut figures = crate::bench::http_load(
        bench.clients,
        bench.seconds,
        reqwest::StatusCode::CREATED,
        |client_index| {
            let mine: Vec<Uuid> =
                plans[client_index * per_client..(client_index + 1) * per_client].to_vec();
            let (url, token) = (url.clone(), insurer_token.clone());
            let mut i = 0u64;
            move |client: &reqwest::Client| {
                let plan = mine[(i as usize) % mine.len()];
                i += 1;
                let body = json!({"command_id": Uuid::now_v7(), "type": "UpdatePlanTerms",
                    "plan_id": plan, "premium_cents": 250000 + i});
                client
                    .post(&url)
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(body.to_string())
            }
        },
    )
    .await;
    figures.cpu = cpu_with_nats(cpu_before);
    running.stop().await;
    let client = async_nats::connect(&bench.nats_url).await?;
    let js = async_nats::jetstream::new(client);
    // A restart reads the whole history again before it answers: how long that takes.
    let history = js
        .get_stream(names.events_stream())
        .await
        .context("the events stream")?
        .cached_info()
        .state
        .messages;
    let started = Instant::now();
    let again = command_service::start(config).await?;
    let start_up = started.elapsed();
    again.stop().await;
    crate::bench_projections::delete_streams(&js, &names).await;
    println!(
        "command service: {known} aggregates known after the setup ({cached} states cached), process resident memory {:.0} MiB (bench included)",
        rss_after_setup as f64 / 1024.0
    );
    println!(
        "command service start-up with {history} events in the history: {:.2} s ({:.0} events/s read and folded)",
        start_up.as_secs_f64(),
        history as f64 / start_up.as_secs_f64().max(1e-6)
    );
    Ok(figures)
}

fn bench_prefix() -> String {
    format!("bench{}", &Uuid::now_v7().simple().to_string()[20..])
}
