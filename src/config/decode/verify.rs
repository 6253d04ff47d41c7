//! Config stage, schema layer for `registries.NAME.verify` (pure): `true`, `false`, or
//! `{ unreachable: hold|publish, timeout: 10s }`.

use super::{Fields, Result, decode_duration, expect_bool, expect_choice};
use crate::config::yaml::{FieldPath, Node, NodeKind};
use crate::config::{UnreachablePolicy, VerifyConfig};

const VERIFY_FIELDS: &[&str] = &["unreachable", "timeout"];

/// `verify: true` checks with the defaults; `false` (or absent) does not check; a mapping sets
/// the policy for an unreachable registry and the time a check may take.
pub fn decode_verify(node: &Node, path: &FieldPath) -> Result<Option<VerifyConfig>> {
    if !matches!(node.kind, NodeKind::Map(_)) {
        let on = expect_bool(node, path)?;
        return Ok(on.then(VerifyConfig::default));
    }
    let fields = Fields::read(node, path, VERIFY_FIELDS)?;
    let mut verify = VerifyConfig::default();
    if let Some(node) = fields.get("unreachable") {
        verify.unreachable = expect_choice(
            node,
            &path.key("unreachable"),
            &[
                ("hold", UnreachablePolicy::Hold),
                ("publish", UnreachablePolicy::Publish),
            ],
        )?;
    }
    if let Some(node) = fields.get("timeout") {
        verify.timeout = decode_duration(node, &path.key("timeout"))?;
    }
    Ok(Some(verify))
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::config::{Config, UnreachablePolicy, VerifyConfig};

    fn registry_verify(verify: &str) -> Result<Option<VerifyConfig>, String> {
        let yaml = format!(
            "registries:\n  reg:\n    server: quay.io\n    from: {{ helper: x }}\n    verify: {verify}\n"
        );
        Config::from_yaml(&yaml, Path::new("/config.yaml"))
            .map(|config| config.registries["reg"].verify.clone())
            .map_err(|error| error.to_string())
    }

    #[test]
    fn verify_is_a_switch_or_a_policy() {
        assert_eq!(registry_verify("true"), Ok(Some(VerifyConfig::default())));
        assert_eq!(registry_verify("false"), Ok(None));
        assert_eq!(
            registry_verify("{ unreachable: publish, timeout: 2s }"),
            Ok(Some(VerifyConfig {
                unreachable: UnreachablePolicy::Publish,
                timeout: Duration::from_secs(2),
            }))
        );
        let error = registry_verify("{ unreachable: maybe }").expect_err("not a policy");
        assert!(error.contains("one of hold, publish"), "{error}");
        let error = registry_verify("yes please").expect_err("not a switch");
        assert!(error.contains("true or false"), "{error}");
    }
}
