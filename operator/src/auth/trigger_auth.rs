//! The parameters of a trigger's `authenticationRef` (KEDA's `authParams`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PodSpec, ServiceAccount};
use keda_operator_crd::{
    AuthPodIdentity, AuthenticationKind, AuthenticationRef, ClusterTriggerAuthentication,
    IdentityOwner, OAuth2, PodIdentityProvider, TriggerAuthentication, TriggerAuthenticationSpec,
};
use kube::Api;

use super::env::select_container;
use super::{AuthError, Objects, ResolvedAuth, Resolver};

/// The service account annotation naming the AWS role of a workload (EKS pod identity).
const EKS_ROLE_ANNOTATION: &str = "eks.amazonaws.com/role-arn";

impl Resolver {
    /// The parameters of `auth_ref`: a TriggerAuthentication in the scaled object's namespace,
    /// or a ClusterTriggerAuthentication whose Secrets and ConfigMaps are read from the cluster
    /// object namespace.
    ///
    /// Sources apply in KEDA's order, a later one overwriting an earlier one's parameter of the
    /// same name: `env` (a variable of the target container, which is `default_container` —
    /// the scaled object's `envSourceContainerName` — or the first container, unless the entry
    /// names another container of the same pod template), `configMapTargetRef`,
    /// `secretTargetRef`, then `oauth2` (`oauthTokenURI`, `clientID`, `clientSecret`, `scopes`
    /// and `endpointParams`). `podIdentity` is returned beside the parameters; AWS roles become
    /// the `awsRoleArn` parameter (from `roleArn`, or from the workload's service account
    /// annotation when the workload owns the identity, and always for `aws-eks`).
    ///
    /// `filePath`, `hashiCorpVault`, `azureKeyVault`, `gcpSecretManager`, `awsSecretManager`
    /// and `boundServiceAccountToken` are not supported yet: an authentication using one is
    /// refused with [`AuthError::Unsupported`] rather than resolved partially.
    pub async fn auth_params(
        &self,
        auth_ref: &AuthenticationRef,
        pod_spec: Option<&PodSpec>,
        default_container: Option<&str>,
    ) -> Result<ResolvedAuth, AuthError> {
        let (spec, object, objects_namespace) = self.fetch(auth_ref).await?;
        if let Some(field) = unsupported_field(&spec) {
            return Err(AuthError::Unsupported {
                object,
                field: field.to_owned(),
            });
        }
        let mut params = BTreeMap::new();

        let env_entries = spec.env.as_deref().unwrap_or_default();
        if !env_entries.is_empty() {
            let pod_spec = pod_spec.ok_or_else(|| AuthError::NoPodTemplate {
                object: object.clone(),
            })?;
            let mut environments: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
            for entry in env_entries {
                let wanted = entry
                    .container_name
                    .as_deref()
                    .filter(|c| !c.is_empty())
                    .or(default_container);
                let container = select_container(pod_spec, wanted)?.name.clone();
                if !environments.contains_key(&container) {
                    let env = self
                        .container_env(Some(pod_spec), Some(container.as_str()))
                        .await?;
                    environments.insert(container.clone(), env);
                }
                let value = environments
                    .get(&container)
                    .and_then(|env| env.get(&entry.name))
                    .ok_or_else(|| AuthError::MissingEnv {
                        object: object.clone(),
                        name: entry.name.clone(),
                        container: container.clone(),
                    })?;
                params.insert(entry.parameter.clone(), value.clone());
            }
        }

        let mut objects = Objects::new(&self.client, &objects_namespace);
        for target in spec.config_map_target_ref.iter().flatten() {
            let value = objects
                .config_map_key(&target.name, &target.key)
                .await?
                .required(&target.key)?;
            params.insert(target.parameter.clone(), value);
        }
        for target in spec.secret_target_ref.iter().flatten() {
            let value = objects
                .secret_key(&target.name, &target.key)
                .await?
                .required(&target.key)?;
            params.insert(target.parameter.clone(), value);
        }
        if let Some(oauth2) = &spec.oauth2 {
            oauth2_params(oauth2, &mut objects, &mut params).await?;
        }

        let pod_identity = spec
            .pod_identity
            .clone()
            .filter(|p| p.provider != PodIdentityProvider::None);
        if let Some(identity) = &pod_identity {
            self.pod_identity_params(identity, pod_spec, &object, &mut params)
                .await?;
        }
        Ok(ResolvedAuth {
            params,
            pod_identity,
        })
    }

    /// The spec of the referenced authentication, its name for messages, and the namespace its
    /// Secrets and ConfigMaps are read from.
    async fn fetch(
        &self,
        auth_ref: &AuthenticationRef,
    ) -> Result<(TriggerAuthenticationSpec, String, String), AuthError> {
        match auth_ref.kind() {
            AuthenticationKind::TriggerAuthentication => {
                let object = format!("TriggerAuthentication {}/{}", self.namespace, auth_ref.name);
                let api: Api<TriggerAuthentication> =
                    Api::namespaced(self.client.clone(), &self.namespace);
                match api.get_opt(&auth_ref.name).await {
                    Ok(Some(ta)) => Ok((ta.spec, object, self.namespace.clone())),
                    Ok(None) => Err(AuthError::NotFound { object }),
                    Err(e) => Err(AuthError::Api {
                        object,
                        source: Box::new(e),
                    }),
                }
            }
            AuthenticationKind::ClusterTriggerAuthentication => {
                let object = format!("ClusterTriggerAuthentication {}", auth_ref.name);
                let api: Api<ClusterTriggerAuthentication> = Api::all(self.client.clone());
                match api.get_opt(&auth_ref.name).await {
                    Ok(Some(cta)) => {
                        Ok((cta.spec.0, object, self.cluster_object_namespace.clone()))
                    }
                    Ok(None) => Err(AuthError::NotFound { object }),
                    Err(e) => Err(AuthError::Api {
                        object,
                        source: Box::new(e),
                    }),
                }
            }
        }
    }

    /// KEDA's pod identity post-processing: AWS roles become `awsRoleArn`; an empty Azure
    /// identity id is refused.
    async fn pod_identity_params(
        &self,
        identity: &AuthPodIdentity,
        pod_spec: Option<&PodSpec>,
        object: &str,
        params: &mut BTreeMap<String, String>,
    ) -> Result<(), AuthError> {
        let invalid = |message: String| AuthError::Invalid {
            object: object.to_owned(),
            message,
        };
        let workload_owned = identity.identity_owner == Some(IdentityOwner::Workload);
        match identity.provider {
            PodIdentityProvider::Aws => {
                let role = identity.role_arn.as_deref().filter(|r| !r.is_empty());
                if let Some(role) = role {
                    if workload_owned {
                        return Err(invalid(
                            "podIdentity.roleArn cannot be set when the workload owns the identity (identityOwner: workload)".to_owned(),
                        ));
                    }
                    params.insert("awsRoleArn".to_owned(), role.to_owned());
                }
                if workload_owned {
                    let role = self.workload_role(pod_spec, object).await?;
                    params.insert("awsRoleArn".to_owned(), role);
                }
            }
            PodIdentityProvider::AwsEks => {
                let role = self.workload_role(pod_spec, object).await?;
                params.insert("awsRoleArn".to_owned(), role);
            }
            PodIdentityProvider::AzureWorkload => {
                if identity.identity_id.as_deref() == Some("") {
                    return Err(invalid(
                        "podIdentity.identityId must not be empty".to_owned(),
                    ));
                }
            }
            PodIdentityProvider::Gcp | PodIdentityProvider::None => {}
        }
        Ok(())
    }

    /// The AWS role annotated on the workload's service account.
    async fn workload_role(
        &self,
        pod_spec: Option<&PodSpec>,
        object: &str,
    ) -> Result<String, AuthError> {
        let pod_spec = pod_spec.ok_or_else(|| AuthError::Invalid {
            object: object.to_owned(),
            message: "the workload's AWS role comes from its service account, but the scale target has no pod template".to_owned(),
        })?;
        let name = pod_spec
            .service_account_name
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or("default");
        let account = format!("ServiceAccount {}/{name}", self.namespace);
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &self.namespace);
        let service_account = api
            .get_opt(name)
            .await
            .map_err(|e| AuthError::Api {
                object: account.clone(),
                source: Box::new(e),
            })?
            .ok_or_else(|| AuthError::NotFound {
                object: account.clone(),
            })?;
        service_account
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(EKS_ROLE_ANNOTATION))
            .filter(|role| !role.is_empty())
            .cloned()
            .ok_or_else(|| AuthError::MissingKey {
                object: format!("the annotations of {account}"),
                key: EKS_ROLE_ANNOTATION.to_owned(),
            })
    }
}

/// The first configured source keda-rs does not resolve yet, in KEDA's order.
fn unsupported_field(spec: &TriggerAuthenticationSpec) -> Option<&'static str> {
    let bound_tokens = spec
        .bound_service_account_token
        .as_ref()
        .is_some_and(|t| !t.is_empty());
    [
        (
            "filePath",
            spec.file_path.as_deref().is_some_and(|p| !p.is_empty()),
        ),
        ("hashiCorpVault", spec.hashi_corp_vault.is_some()),
        ("azureKeyVault", spec.azure_key_vault.is_some()),
        ("gcpSecretManager", spec.gcp_secret_manager.is_some()),
        ("awsSecretManager", spec.aws_secret_manager.is_some()),
        ("boundServiceAccountToken", bound_tokens),
    ]
    .into_iter()
    .find_map(|(field, set)| set.then_some(field))
}

/// `oauth2`: the token endpoint, the client's id and secret, scopes and extra token parameters.
async fn oauth2_params(
    oauth2: &OAuth2,
    objects: &mut Objects<'_>,
    params: &mut BTreeMap<String, String>,
) -> Result<(), AuthError> {
    let reference = &oauth2.client_secret.value_from.secret_key_ref;
    let secret = objects
        .secret_key(&reference.name, &reference.key)
        .await?
        .required(&reference.key)?;
    params.insert("oauthTokenURI".to_owned(), oauth2.token_url.clone());
    params.insert("clientID".to_owned(), oauth2.client_id.clone());
    params.insert("clientSecret".to_owned(), secret);
    if let Some(scopes) = oauth2.scopes.as_ref().filter(|s| !s.is_empty()) {
        params.insert("scopes".to_owned(), scopes.join(","));
    }
    if let Some(extra) = oauth2.token_url_params.as_ref().filter(|p| !p.is_empty()) {
        params.insert("endpointParams".to_owned(), url_encode(extra));
    }
    Ok(())
}

/// `k=v&k2=v2`, keys sorted, each part query-escaped (space as `+`), like Go's
/// `url.Values.Encode`.
fn url_encode(values: &BTreeMap<String, String>) -> String {
    fn escape(text: &str) -> String {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        let mut out = String::with_capacity(text.len());
        for byte in text.bytes() {
            match byte {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    out.push(char::from(byte));
                }
                b' ' => out.push('+'),
                other => {
                    out.push('%');
                    out.push(char::from(HEX[usize::from(other >> 4)]));
                    out.push(char::from(HEX[usize::from(other & 0x0F)]));
                }
            }
        }
        out
    }
    values
        .iter()
        .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_params_are_encoded_like_go() {
        let values = BTreeMap::from([
            ("resource".to_owned(), "https://x.example/a b".to_owned()),
            ("audience".to_owned(), "api&more=1".to_owned()),
        ]);
        assert_eq!(
            url_encode(&values),
            "audience=api%26more%3D1&resource=https%3A%2F%2Fx.example%2Fa+b"
        );
    }

    #[test]
    fn unsupported_sources_are_named_in_order() {
        let mut spec = TriggerAuthenticationSpec::default();
        assert_eq!(unsupported_field(&spec), None);
        spec.bound_service_account_token = Some(Vec::new());
        assert_eq!(unsupported_field(&spec), None);
        spec.aws_secret_manager = Some(keda_operator_crd::AwsSecretManager::default());
        assert_eq!(unsupported_field(&spec), Some("awsSecretManager"));
        spec.hashi_corp_vault = Some(keda_operator_crd::HashiCorpVault::default());
        assert_eq!(unsupported_field(&spec), Some("hashiCorpVault"));
        spec.file_path = Some("/auth/params.json".to_owned());
        assert_eq!(unsupported_field(&spec), Some("filePath"));
    }
}
