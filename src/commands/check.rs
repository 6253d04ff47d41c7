//! `pullsecretd check-config FILE`.
use std::path::Path;

use pullsecretd::config::Config;

use crate::cli::{Failure, bad_input};

pub(crate) fn check_config(file: &Path) -> Result<(), Failure> {
    let config = Config::load(file).map_err(bad_input)?;
    println!(
        "{}: valid ({} registries, {} pull secrets, {} image pullers)",
        file.display(),
        config.registries.len(),
        config.pull_secrets.len(),
        config.image_pullers.len()
    );
    Ok(())
}
