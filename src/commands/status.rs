//! `pullsecretd status`: what this instance keeps in each project, read from the cluster (its
//! Secrets' annotations, the service accounts linking them, its bindings and its Events).
//! Reads no source and writes nothing.
use std::path::Path;

use k8s_openapi::jiff::Timestamp;

use pullsecretd::cluster::{self, apply::CONTROLLER_NAME};
use pullsecretd::config::Config;
use pullsecretd::names::dns1123_label_problem;
use pullsecretd::render;
use pullsecretd::status::{StatusInputs, status};

use crate::cli::{Failure, KubeArgs, OutputFormat, bad_input, kube_client, runtime};

pub(crate) fn run_status(
    config: &Path,
    projects: &[String],
    format: OutputFormat,
    kube: &KubeArgs,
) -> Result<(), Failure> {
    let config = Config::load(config).map_err(bad_input)?;
    let projects: Vec<String> = projects.iter().map(|p| p.trim().to_string()).collect();
    for name in &projects {
        if let Some(problem) = dns1123_label_problem(name) {
            return Err(bad_input(anyhow::anyhow!(
                "--projects: {name:?} is not a valid project name: it {problem}"
            )));
        }
    }
    let runtime = runtime()?;
    runtime.block_on(async {
        let client = kube_client(kube).await.map_err(bad_input)?;
        let throttle = kube.throttle();
        let api_failure = |error: cluster::ApiError| Failure {
            status: 1,
            error: error.into(),
        };
        let snapshot = cluster::read_snapshot(&client, &config, &throttle)
            .await
            .map_err(api_failure)?;
        // Events where they can matter: the projects asked for, else the namespaces the
        // snapshot read (namespaced mode: only its own, never a cluster-wide list).
        let (namespaces, cluster_wide) = if projects.is_empty() {
            let read = snapshot
                .namespaces
                .iter()
                .map(|ns| ns.name.clone())
                .collect();
            (read, config.namespaces.is_none())
        } else {
            (projects.clone(), false)
        };
        let events = cluster::read_events(&client, &throttle, &namespaces, cluster_wide)
            .await
            .map_err(api_failure)?;
        let instance = config.instance_name();
        let inputs = StatusInputs {
            instance,
            events: &events,
            reporting_controller: CONTROLLER_NAME,
            now: Timestamp::now(),
        };
        let report = status(&snapshot.projects, &inputs, &projects);
        match format {
            OutputFormat::Text => print!("{}", render::status_table(instance, &report)),
            OutputFormat::Json => {
                let json = serde_json::json!({"instance": instance, "projects": report});
                println!("{json:#}");
            }
        }
        Ok(())
    })
}
