//! `pullsecretd check-config FILE`.
use std::path::Path;

use pullsecretd::config::Config;
use pullsecretd::render::counted;

use crate::cli::{Failure, bad_input};

pub(crate) fn check_config(file: &Path) -> Result<(), Failure> {
    let config = Config::load(file).map_err(bad_input)?;
    println!(
        "{}: valid ({}, {}, {})",
        file.display(),
        counted(config.registries.len(), "registry", "registries"),
        counted(config.pull_secrets.len(), "pull secret", "pull secrets"),
        counted(config.image_pullers.len(), "image puller", "image pullers")
    );
    Ok(())
}
