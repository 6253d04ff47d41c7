//! The `pullsecretd` binary: parses arguments, calls into the library, maps errors to exit codes.
//!
//! Exit status: 0 success, 1 a failure while doing the job (e.g. writing output), 2 bad input
//! (usage, config, or a credential source that cannot be read). Diagnostics go to stderr and
//! never contain credential values.

mod cli;
mod commands;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser as _;

use cli::{Cli, Command, error_chain, init_helper_logging, init_logging};
use commands::credential_provider::{config_from_args, credential_provider};
use commands::helper::credential_helper;
use pullsecretd::credhelper::protocol::HELPER_NAME;
use pullsecretd::credprovider::PROVIDER_NAME;
use pullsecretd::source::helper::HELPER_PREFIX;
use pullsecretd::telemetry;

fn main() -> ExitCode {
    // Run as `docker-credential-pullsecretd ACTION` (a symlink or copy): the helper protocol.
    let mut args = std::env::args_os();
    let program = args.next().map(PathBuf::from).unwrap_or_default();
    let name = program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    // Run as `pullsecretd-credential-provider [--config FILE]`: the kubelet's provider.
    if name.as_deref() == Some(PROVIDER_NAME) {
        init_helper_logging();
        let words: Vec<String> = args.map(|a| a.to_string_lossy().into_owned()).collect();
        return match config_from_args(&words) {
            Ok(config) => credential_provider(config),
            Err(usage) => {
                eprintln!("{usage}");
                ExitCode::from(2)
            }
        };
    }
    if let Some(name) = name.filter(|n| n.starts_with(HELPER_PREFIX)) {
        init_helper_logging();
        let words: Vec<String> = args.map(|a| a.to_string_lossy().into_owned()).collect();
        let action = match words.as_slice() {
            [word] => Some(word.as_str()),
            _ => None,
        };
        return credential_helper(&name, action, None);
    }
    let cli = Cli::parse();
    match &cli.command {
        Command::Run(args) => {
            telemetry::init_logging(
                args.log_format.format(),
                "info,kube_runtime=warn,kube_client=off,vaultrs=off,rustify=off",
            );
        }
        // What a workstation pass writes is worth seeing without RUST_LOG.
        Command::Workstation(args) => telemetry::init_logging(
            args.log_format.format(),
            "warn,pullsecretd::workstation=info,pullsecretd::commands=info,kube_client=off,vaultrs=off,rustify=off",
        ),
        Command::CredentialHelper { .. } | Command::CredentialProvider { .. } => {
            init_helper_logging()
        }
        _ => init_logging(),
    }
    let outcome = match cli.command {
        Command::Completions { shell } => commands::docs::completions(shell),
        Command::Man { dir } => commands::docs::man_pages(dir.as_deref()),
        Command::CheckConfig { file, config } => commands::check::check_config(file.or(config)),
        Command::Plan {
            sources,
            projects,
            output,
            cluster: false,
            format,
            ..
        } => commands::plan::run_plan(&sources, &projects, output.as_deref(), format),
        Command::Plan {
            sources,
            cluster: true,
            format,
            kube,
            ..
        } => commands::plan::run_cluster_plan(&sources, &kube, format),
        Command::Status {
            config,
            projects,
            format,
            kube,
        } => commands::status::run_status(&config, &projects, format, &kube),
        Command::Once {
            sources,
            kube,
            writes,
        } => commands::once::run_once(&sources, &kube, &writes),
        Command::Run(args) => commands::run::run_daemon(&args),
        Command::Workstation(args) => commands::workstation::run_workstation(args),
        Command::CredentialProvider { config } => return credential_provider(config),
        Command::CredentialHelper { action, config } => {
            return credential_helper(
                &format!("{HELPER_PREFIX}{HELPER_NAME}"),
                action.as_deref(),
                config,
            );
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", error_chain(&failure.error));
            ExitCode::from(failure.status)
        }
    }
}
