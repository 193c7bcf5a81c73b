//! The environment of the scale target's container (KEDA's `resolvedEnv`), as the kubelet would
//! build it: `envFrom` first, then `env`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec};

use super::{AuthError, Objects, Resolver};

impl Resolver {
    /// The environment of a container of `pod_spec`: the one named `container`, else the first.
    /// Without a pod template (a scale target that has none) the environment is empty.
    ///
    /// `envFrom` comes first (every key of a ConfigMap or Secret, behind the optional prefix),
    /// then `env` in order: literal values with `$(VAR)` expanded against the variables resolved
    /// so far (`$$` escapes a `$`), `secretKeyRef` and `configMapKeyRef` values. `fieldRef`,
    /// `resourceFieldRef` and `fileKeyRef` variables are skipped. Everything is read in the
    /// scaled object's namespace; a missing ConfigMap, Secret or key is an error unless the
    /// reference is `optional`.
    pub async fn container_env(
        &self,
        pod_spec: Option<&PodSpec>,
        container: Option<&str>,
    ) -> Result<BTreeMap<String, String>, AuthError> {
        let Some(pod_spec) = pod_spec else {
            return Ok(BTreeMap::new());
        };
        let container = select_container(pod_spec, container)?;
        let mut objects = Objects::new(&self.client, &self.namespace);
        resolve_env(container, &mut objects).await
    }
}

/// The container named `name` (when given and not empty), else the first one.
pub(super) fn select_container<'a>(
    pod_spec: &'a PodSpec,
    name: Option<&str>,
) -> Result<&'a Container, AuthError> {
    match name.filter(|n| !n.is_empty()) {
        Some(name) => pod_spec
            .containers
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| AuthError::ContainerNotFound {
                name: name.to_owned(),
            }),
        None => pod_spec.containers.first().ok_or(AuthError::NoContainers),
    }
}

async fn resolve_env(
    container: &Container,
    objects: &mut Objects<'_>,
) -> Result<BTreeMap<String, String>, AuthError> {
    let mut resolved = BTreeMap::new();
    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.as_deref().unwrap_or_default();
        if let Some(reference) = &source.config_map_ref {
            match objects.config_map_data(&reference.name).await? {
                Some(data) => {
                    for (key, value) in data {
                        resolved.insert(format!("{prefix}{key}"), value);
                    }
                }
                None if reference.optional == Some(true) => {}
                None => {
                    return Err(AuthError::NotFound {
                        object: objects.config_map_name(&reference.name),
                    });
                }
            }
        }
        if let Some(reference) = &source.secret_ref {
            match objects.secret_data(&reference.name).await? {
                Some(data) => {
                    for (key, value) in data {
                        resolved.insert(format!("{prefix}{key}"), value);
                    }
                }
                None if reference.optional == Some(true) => {}
                None => {
                    return Err(AuthError::NotFound {
                        object: objects.secret_name(&reference.name),
                    });
                }
            }
        }
    }
    for var in container.env.iter().flatten() {
        let source = var.value_from.as_ref();
        let value = if let Some(value) = var.value.as_deref().filter(|v| !v.is_empty()) {
            expand(value, &resolved)
        } else if let Some(reference) = source.and_then(|s| s.secret_key_ref.as_ref()) {
            let lookup = objects.secret_key(&reference.name, &reference.key).await?;
            match lookup {
                super::Lookup::Found(value) => value,
                _ if reference.optional == Some(true) => continue,
                missing => missing.required(&reference.key)?,
            }
        } else if let Some(reference) = source.and_then(|s| s.config_map_key_ref.as_ref()) {
            let lookup = objects
                .config_map_key(&reference.name, &reference.key)
                .await?;
            match lookup {
                super::Lookup::Found(value) => value,
                _ if reference.optional == Some(true) => continue,
                missing => missing.required(&reference.key)?,
            }
        } else if source.is_some() {
            tracing::debug!(
                variable = %var.name,
                container = %container.name,
                "environment variable from fieldRef, resourceFieldRef or fileKeyRef skipped"
            );
            continue;
        } else {
            String::new()
        };
        resolved.insert(var.name.clone(), value);
    }
    Ok(resolved)
}

/// Expands `$(VAR)` references in `value` against `env` the way the kubelet does: `$$` is an
/// escaped `$`, a reference to an unknown variable stays as written, and an unterminated `$(`
/// is kept literally.
pub(super) fn expand(value: &str, env: &BTreeMap<String, String>) -> String {
    let bytes = value.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < bytes.len() {
        if bytes[cursor] == b'$' && cursor + 1 < bytes.len() {
            out.extend_from_slice(&bytes[checkpoint..cursor]);
            let advance = match bytes[cursor + 1] {
                b'$' => {
                    out.push(b'$');
                    1
                }
                b'(' => {
                    let close = bytes[cursor + 2..].iter().position(|&b| b == b')');
                    if let Some(close) = close {
                        // `$(` and `)` are ASCII, so the name is whole characters.
                        let name = &value[cursor + 2..cursor + 2 + close];
                        if let Some(resolved) = env.get(name) {
                            out.extend_from_slice(resolved.as_bytes());
                        } else {
                            out.extend_from_slice(b"$(");
                            out.extend_from_slice(name.as_bytes());
                            out.push(b')');
                        }
                        close + 2
                    } else {
                        out.extend_from_slice(b"$(");
                        1
                    }
                }
                other => {
                    out.push(b'$');
                    out.push(other);
                    1
                }
            };
            cursor += advance;
            checkpoint = cursor + 1;
        }
        cursor += 1;
    }
    out.extend_from_slice(&bytes[checkpoint.min(bytes.len())..]);
    // Only whole pieces of `value` and of `env` values were copied, in order.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("HOST".to_owned(), "db".to_owned()),
            ("PORT".to_owned(), "5432".to_owned()),
            ("EMPTY".to_owned(), String::new()),
        ])
    }

    #[test]
    fn expands_like_the_kubelet() {
        let cases = [
            ("plain", "plain"),
            ("$(HOST):$(PORT)", "db:5432"),
            ("postgres://$(HOST)/x", "postgres://db/x"),
            ("$$(HOST)", "$(HOST)"),
            ("$$$(HOST)", "$db"),
            ("$$", "$"),
            ("a$$b", "a$b"),
            ("$(MISSING)", "$(MISSING)"),
            ("$(EMPTY)x", "x"),
            ("$(HOST", "$(HOST"),
            ("$HOST", "$HOST"),
            ("$", "$"),
            ("x$", "x$"),
            ("$()", "$()"),
            ("ü$(HOST)ü", "üdbü"),
            ("$ü", "$ü"),
            ("$(HOST)$(PORT)$$", "db5432$"),
        ];
        for (value, want) in cases {
            assert_eq!(expand(value, &env()), want, "{value}");
        }
    }
}
