//! Config stage, schema layer for `credentialProvider:` (pure): how the kubelet may cache the
//! provider's answers and, in service-account mode, which Vault role a pod's token logs in as.

use super::vault::decode_auth_mount;
use super::{Fields, Result, decode_duration, expect_choice, expect_string, problem};
use crate::config::VaultConfig;
use crate::config::provider::{
    CacheKeyType, CredentialProviderConfig, RoleTemplate, ServiceAccountLogin,
};
use crate::config::yaml::{FieldPath, Node};

const PROVIDER_FIELDS: &[&str] = &["cacheKeyType", "cacheDuration", "serviceAccounts"];
const SERVICE_ACCOUNT_FIELDS: &[&str] = &["role", "mount"];

/// `credentialProvider: { cacheKeyType, cacheDuration, serviceAccounts: { role, mount } }`.
/// Service-account mode needs the `vault:` block: the pod's token is exchanged there.
pub fn decode_credential_provider(
    node: &Node,
    path: &FieldPath,
    vault: Option<&VaultConfig>,
) -> Result<CredentialProviderConfig> {
    let fields = Fields::read(node, path, PROVIDER_FIELDS)?;
    let cache_key_type = match fields.get("cacheKeyType") {
        Some(node) => expect_choice(
            node,
            &path.key("cacheKeyType"),
            &[
                ("Image", CacheKeyType::Image),
                ("Registry", CacheKeyType::Registry),
                ("Global", CacheKeyType::Global),
            ],
        )?,
        None => CacheKeyType::default(),
    };
    let cache_duration = match fields.get("cacheDuration") {
        Some(node) => Some(decode_duration(node, &path.key("cacheDuration"))?),
        None => None,
    };
    let service_accounts = match fields.get("serviceAccounts") {
        Some(node) => {
            let path = path.key("serviceAccounts");
            if vault.is_none() {
                return Err(problem(
                    node.mark,
                    &path,
                    "service-account mode logs in to Vault with the pod's token: add a vault: \
                     block",
                ));
            }
            Some(decode_service_accounts(node, &path)?)
        }
        None => None,
    };
    Ok(CredentialProviderConfig {
        cache_key_type,
        cache_duration,
        service_accounts,
    })
}

fn decode_service_accounts(node: &Node, path: &FieldPath) -> Result<ServiceAccountLogin> {
    let fields = Fields::read(node, path, SERVICE_ACCOUNT_FIELDS)?;
    let role_node = fields.required("role")?;
    let role_path = path.key("role");
    let role = RoleTemplate::parse(expect_string(role_node, &role_path)?)
        .map_err(|message| problem(role_node.mark, &role_path, message))?;
    let mount = decode_auth_mount(&fields, path, "kubernetes")?;
    Ok(ServiceAccountLogin { mount, role })
}

#[cfg(test)]
mod tests {
    use crate::config::{CacheKeyType, Config, ConfigError};
    use std::path::Path;
    use std::time::Duration;

    const VAULT: &str = "vault:\n  address: http://127.0.0.1:8200\n  auth: { method: token }\n";

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_yaml(text, Path::new("/nonexistent/config.yaml"))
    }

    fn error(text: &str) -> String {
        load(text).expect_err("invalid").to_string()
    }

    #[test]
    fn the_block_is_decoded_with_its_defaults() {
        let config = load("registries: {}\n").expect("valid");
        assert_eq!(config.credential_provider, Default::default());
        let text = format!(
            "{VAULT}credentialProvider:\n  cacheKeyType: Global\n  cacheDuration: 90s\n  \
             serviceAccounts: {{ role: \"pull-{{name}}\" }}\n"
        );
        let provider = load(&text).expect("valid").credential_provider;
        assert_eq!(provider.cache_key_type, CacheKeyType::Global);
        assert_eq!(provider.cache_duration, Some(Duration::from_secs(90)));
        let login = provider.service_accounts.expect("service-account mode");
        assert_eq!(login.mount, "kubernetes");
    }

    #[test]
    fn mistakes_name_the_field() {
        assert!(
            error("credentialProvider: { cacheKeyType: registry }\n").contains(
                "credentialProvider.cacheKeyType: expected one of Image, Registry, Global"
            )
        );
        assert!(
            error("credentialProvider: { cacheDuration: 0s }\n")
                .contains("credentialProvider.cacheDuration: must be longer than zero")
        );
        assert!(
            error("credentialProvider: { serviceAccounts: { role: r } }\n").contains(
                "credentialProvider.serviceAccounts: service-account mode logs in to Vault"
            )
        );
        let text = format!(
            "{VAULT}credentialProvider: {{ serviceAccounts: {{ role: \"x-{{team}}\" }} }}\n"
        );
        assert!(
            error(&text).contains("credentialProvider.serviceAccounts.role: unknown placeholder")
        );
        let text = format!("{VAULT}credentialProvider: {{ serviceAccounts: {{ mount: k }} }}\n");
        assert!(
            error(&text)
                .contains("credentialProvider.serviceAccounts.role: required field is missing")
        );
        assert!(error("credentialProvider: { cacheKey: Image }\n").contains("unknown field"));
    }
}
