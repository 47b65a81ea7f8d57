//! `hms project` (every projector, until stopped) and `hms projections rebuild`.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use projections::runtime::ProjectorConfig;
use std::path::PathBuf;

/// The projectors' configuration (CONTRACT.md).
#[derive(Debug, Args)]
pub struct ProjectArgs {
    #[arg(
        long,
        env = "HMS_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/hms"
    )]
    database_url: String,
    #[command(flatten)]
    nats: crate::nats_args::NatsArgs,
    #[arg(long, env = "HMS_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// The key of the public-health pseudonyms; by default `$HMS_DATA_DIR/pseudonym.key`, made
    /// on first start.
    #[arg(long, env = "HMS_PSEUDONYM_KEY_FILE")]
    pseudonym_key_file: Option<PathBuf>,
    /// Where `/metrics` is served; `off` serves none.
    #[arg(long, env = "HMS_METRICS_LISTEN", default_value = "127.0.0.1:9464")]
    metrics_listen: String,
    #[arg(long, env = "HMS_PUBLIC_HEALTH_MIN_CELL", default_value_t = 11)]
    public_health_min_cell: u64,
    /// The most events applied in one transaction.
    #[arg(long, env = "HMS_PROJECTION_BATCH", default_value_t = 1000)]
    batch: usize,
    /// Whose events are applied: `registered` (only nodes registered earlier in the history,
    /// each event verified against the registered key; others are parked) or `any` (every
    /// event: for development histories made without registrations).
    #[arg(long, env = "HMS_PROJECTION_ORIGINS", default_value = "registered",
        value_parser = ["registered", "any"])]
    origins: String,
}

impl ProjectArgs {
    pub fn config(&self) -> Result<projections::Config> {
        let names = self.nats.names()?;
        if self.batch == 0 || self.batch > 10_000 {
            bail!("HMS_PROJECTION_BATCH must be between 1 and 10000");
        }
        let mut projector = ProjectorConfig::new(names);
        projector.batch = self.batch;
        if self.origins == "any" {
            tracing::warn!(
                "HMS_PROJECTION_ORIGINS=any: events of unregistered nodes and unverified signatures are applied (development only)"
            );
            projector.origins = projections::origins::Origins::Any;
        }
        let key_file = self
            .pseudonym_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("pseudonym.key"));
        let pseudonym_key = projections::service::load_or_create_pseudonym_key(&key_file)
            .map_err(anyhow::Error::msg)
            .context("the public-health pseudonym key")?;
        Ok(projections::Config {
            database_url: self.database_url.clone(),
            nats_url: self.nats.nats_url.clone(),
            credentials: self.nats.credentials(),
            metrics_listen: (self.metrics_listen != "off").then(|| self.metrics_listen.clone()),
            pseudonym_key,
            min_cell: self.public_health_min_cell,
            projector,
        })
    }
}

#[derive(Debug, Args)]
pub struct ProjectionsArgs {
    #[command(subcommand)]
    tool: ProjectionsTool,
    #[command(flatten)]
    opts: ProjectArgs,
}

#[derive(Debug, Subcommand)]
enum ProjectionsTool {
    /// Replay the whole history into fresh copies of a read model's schemas, with progress, and
    /// swap them in; queries keep reading the old ones until then.
    Rebuild {
        /// `audit`, `hospital`, `insurance`, `public_health`, or `all`.
        name: String,
    },
}

/// `hms project`: runs until SIGTERM or Ctrl-C.
pub fn run(args: ProjectArgs) -> Result<()> {
    let config = args.config()?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let running = projections::start(config)
            .await
            .context("starting the projectors")?;
        tracing::info!("projectors running; Ctrl-C stops them");
        crate::shutdown_signal().await;
        running.stop().await;
        tracing::info!("projectors stopped");
        Ok(())
    })
}

/// `hms projections rebuild <name|all>`.
pub fn projections(args: ProjectionsArgs) -> Result<()> {
    let ProjectionsTool::Rebuild { name } = &args.tool;
    let names: Vec<&str> = if name == "all" {
        projections::service::MODELS.to_vec()
    } else if let Some(found) = projections::service::MODELS.iter().find(|m| **m == name) {
        vec![*found]
    } else {
        bail!(
            "no read model called {name:?}; the read models are {} (or all)",
            projections::service::MODELS.join(", ")
        );
    };
    let mut config = args.opts.config()?;
    config.metrics_listen = None;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let options = projections::db::options(&config.database_url)?;
        let pool = projections::db::connect(&options, 8)
            .await
            .context("connecting to the read models")?;
        let js = projections::service::connect_nats(&config.nats_url, &config.credentials).await?;
        projections::service::ensure_streams(&js, &config.projector.names).await?;
        let bars = MultiProgress::new();
        let style = ProgressStyle::with_template(
            "{prefix:>14} [{bar:30}] {pos}/{len} events  {per_sec}  eta {eta}  {msg}",
        )
        .expect("a valid template")
        .progress_chars("=> ");
        let bar_of: std::collections::HashMap<&str, ProgressBar> = names
            .iter()
            .map(|model| {
                let bar = bars.add(ProgressBar::new(0).with_style(style.clone()));
                bar.set_prefix(model.to_string());
                (*model, bar)
            })
            .collect();
        let bar_of = std::sync::Arc::new(bar_of);
        let progress = {
            let bar_of = bar_of.clone();
            std::sync::Arc::new(move |model: &str, at: u64, head: u64| {
                if let Some(bar) = bar_of.get(model) {
                    bar.set_length(head);
                    bar.set_position(at.min(head));
                }
            })
        };
        let results =
            projections::service::rebuild_models(&names, &config, &pool, &js, progress).await;
        for (model, result) in &results {
            let bar = &bar_of[model];
            match result {
                Ok(done) => bar.finish_with_message(format!(
                    "swapped in: {} events in {:.1} s",
                    done.applied,
                    done.took.as_secs_f64()
                )),
                Err(e) => bar.abandon_with_message(format!("failed: {e}")),
            }
        }
        let mut failed = false;
        for (model, result) in results {
            match result {
                Ok(done) => println!(
                    "{model}: rebuilt to stream sequence {} ({} events, {:.0} events/s)",
                    done.checkpoint,
                    done.applied,
                    done.applied as f64 / done.took.as_secs_f64().max(1e-9)
                ),
                Err(e) => {
                    eprintln!("{e}");
                    failed = true;
                }
            }
        }
        if failed {
            bail!("a rebuild failed; the live read models are unchanged");
        }
        Ok(())
    })
}
