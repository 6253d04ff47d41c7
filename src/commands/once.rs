//! `pullsecretd once`: make the cluster match the config once.
use pullsecretd::cluster::ApplyOptions;
use pullsecretd::config::Config;
use pullsecretd::{reconcile, render};

use super::{held_outcome, read_sources};
use crate::cli::{Failure, KubeArgs, SourceArgs, WriteArgs, bad_input, kube_client, runtime};

pub(crate) fn run_once(
    sources: &SourceArgs,
    kube: &KubeArgs,
    writes: &WriteArgs,
) -> Result<(), Failure> {
    let config = Config::load(&sources.config).map_err(bad_input)?;
    let runtime = runtime()?;
    runtime.block_on(async {
        let (credentials, failures) = read_sources(&config, sources).await?;
        let client = kube_client(kube).await.map_err(bad_input)?;
        let throttle = kube.throttle();
        let options = ApplyOptions {
            events: !writes.no_events,
            ..ApplyOptions::for_instance(config.instance_name())
        };
        let report = reconcile::reconcile_once(
            &client,
            &throttle,
            &options,
            &config,
            &credentials,
            writes.concurrency,
        )
        .await
        .map_err(|error| Failure {
            status: 1,
            error: error.into(),
        })?;
        print!("{}", render::once_summary(&report));
        let held = held_outcome(
            &config,
            &failures,
            report
                .projects
                .iter()
                .flat_map(|p| &p.held)
                .map(|held| &held.secret),
        );
        if !report.converged() {
            // A failed write outranks a held source: exit 1, with the holds said too.
            if let Err(held) = held {
                eprintln!("error: {}", crate::cli::error_chain(&held.error));
            }
            return Err(Failure {
                status: 1,
                error: anyhow::anyhow!("not every project converged; see the failures above"),
            });
        }
        held
    })
}
