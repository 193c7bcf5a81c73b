//! `TriggerAuthentication` and `ClusterTriggerAuthentication`: where a trigger's secrets come from.
//!
//! Both kinds share one spec; the cluster-scoped one reads its Secrets and ConfigMaps from the
//! operator's cluster-object namespace.

#![allow(
    clippy::duplicated_attributes,
    reason = "each printcolumn(...) of the CRD derive repeats the same keys"
)]

use std::collections::BTreeMap;
use std::ops::Deref;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Sources of authentication parameters, applied in KEDA's order: `podIdentity`, `env`,
/// `filePath`, `configMapTargetRef`, `secretTargetRef`, then the secret stores.
#[derive(
    CustomResource, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "keda.sh",
    version = "v1alpha1",
    kind = "TriggerAuthentication",
    namespaced,
    status = "TriggerAuthenticationStatus",
    shortname = "ta",
    shortname = "triggerauth",
    derive = "PartialEq",
    doc = "TriggerAuthentication tells triggers in its namespace where to find their credentials: Secrets, ConfigMaps, the target's environment, pod identity or an external secret store.",
    printcolumn(
        name = "PodIdentity",
        type_ = "string",
        json_path = ".spec.podIdentity.provider"
    ),
    printcolumn(
        name = "Secret",
        type_ = "string",
        json_path = ".spec.secretTargetRef[*].name"
    ),
    printcolumn(name = "Env", type_ = "string", json_path = ".spec.env[*].name"),
    printcolumn(
        name = "VaultAddress",
        type_ = "string",
        json_path = ".spec.hashiCorpVault.address"
    ),
    printcolumn(
        name = "ScaledObjects",
        type_ = "string",
        priority = 1,
        json_path = ".status.scaledobjects"
    ),
    printcolumn(
        name = "ScaledJobs",
        type_ = "string",
        priority = 1,
        json_path = ".status.scaledjobs"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct TriggerAuthenticationSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_identity: Option<AuthPodIdentity>,
    /// Parameters read from Secrets (in the object's namespace, or the cluster-object namespace
    /// for a ClusterTriggerAuthentication).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_target_ref: Option<Vec<AuthTargetRef>>,
    /// Parameters read from ConfigMaps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_target_ref: Option<Vec<AuthTargetRef>>,
    /// Parameters read from the scale target's container environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<AuthEnvironment>>,
    /// A JSON file of parameters on the operator's filesystem (ClusterTriggerAuthentication only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hashi_corp_vault: Option<HashiCorpVault>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_key_vault: Option<AzureKeyVault>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcp_secret_manager: Option<GcpSecretManager>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_secret_manager: Option<AwsSecretManager>,
    /// Parameters filled with short-lived tokens of service accounts in the object's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_service_account_token: Option<Vec<BoundServiceAccountToken>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth2: Option<OAuth2>,
}

/// The cluster-scoped twin of [`TriggerAuthentication`], with the same spec.
#[derive(
    CustomResource, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "keda.sh",
    version = "v1alpha1",
    kind = "ClusterTriggerAuthentication",
    status = "TriggerAuthenticationStatus",
    shortname = "cta",
    shortname = "clustertriggerauth",
    derive = "PartialEq",
    doc = "ClusterTriggerAuthentication tells triggers in any namespace where to find their credentials; its Secrets and ConfigMaps live in the operator's cluster-object namespace.",
    printcolumn(
        name = "PodIdentity",
        type_ = "string",
        json_path = ".spec.podIdentity.provider"
    ),
    printcolumn(
        name = "Secret",
        type_ = "string",
        json_path = ".spec.secretTargetRef[*].name"
    ),
    printcolumn(name = "Env", type_ = "string", json_path = ".spec.env[*].name"),
    printcolumn(name = "FilePath", type_ = "string", json_path = ".spec.filePath"),
    printcolumn(
        name = "VaultAddress",
        type_ = "string",
        json_path = ".spec.hashiCorpVault.address"
    ),
    printcolumn(
        name = "ScaledObjects",
        type_ = "string",
        priority = 1,
        json_path = ".status.scaledobjects"
    ),
    printcolumn(
        name = "ScaledJobs",
        type_ = "string",
        priority = 1,
        json_path = ".status.scaledjobs"
    )
)]
#[serde(transparent)]
pub struct ClusterTriggerAuthenticationSpec(pub TriggerAuthenticationSpec);

impl Deref for ClusterTriggerAuthenticationSpec {
    type Target = TriggerAuthenticationSpec;

    fn deref(&self) -> &TriggerAuthenticationSpec {
        &self.0
    }
}

/// Which objects use this authentication (comma-separated names).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TriggerAuthenticationStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaledobjects: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaledjobs: Option<String>,
}

/// The platform identity a scaler authenticates with.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthPodIdentity {
    pub provider: PodIdentityProvider,
    /// Azure: client id of the managed identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_id: Option<String>,
    /// Azure: tenant overriding the default; needs `identityId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_tenant_id: Option<String>,
    /// Azure: authority host overriding the default; needs `identityTenantId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_authority_host: Option<String>,
    /// AWS: role to assume; exclusive with `identityOwner`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// AWS: external id passed when assuming `roleArn`.
    #[serde(
        rename = "externalID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub external_id: Option<String>,
    /// AWS: whose identity to use, the operator's or the workload's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_owner: Option<IdentityOwner>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PodIdentityProvider {
    #[serde(rename = "azure-workload")]
    AzureWorkload,
    #[serde(rename = "gcp")]
    Gcp,
    #[serde(rename = "aws")]
    Aws,
    // Deprecated by KEDA in favour of `aws`.
    #[serde(rename = "aws-eks")]
    AwsEks,
    #[default]
    #[serde(rename = "none")]
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum IdentityOwner {
    Keda,
    Workload,
}

/// Fills `parameter` from `key` of the Secret or ConfigMap `name`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AuthTargetRef {
    pub parameter: String,
    pub name: String,
    pub key: String,
}

/// Fills `parameter` from the environment variable `name` of the scale target's container.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthEnvironment {
    pub parameter: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
}

/// Parameters read from HashiCorp Vault.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HashiCorpVault {
    pub address: String,
    pub authentication: VaultAuthentication,
    pub secrets: Vec<VaultSecret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<VaultCredential>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum VaultAuthentication {
    #[default]
    Token,
    Kubernetes,
}

/// How keda-rs logs in to Vault.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VaultCredential {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Path of a service account token file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// A service account whose token is requested for the login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
}

/// One Vault secret mapped to a parameter.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VaultSecret {
    pub parameter: String,
    pub path: String,
    pub key: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<VaultSecretType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pki_data: Option<VaultPkiData>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum VaultSecretType {
    // A generic (v1) secret.
    #[default]
    #[serde(rename = "")]
    Generic,
    #[serde(rename = "secretV2")]
    SecretV2,
    #[serde(rename = "secret")]
    Secret,
    #[serde(rename = "pki")]
    Pki,
}

/// Certificate request for a `pki` Vault secret.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VaultPkiData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alt_names: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_sans: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri_sans: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_sans: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

/// Parameters read from Azure Key Vault.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AzureKeyVault {
    pub vault_uri: String,
    pub secrets: Vec<AzureKeyVaultSecret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<AzureKeyVaultCredentials>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_identity: Option<AuthPodIdentity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud: Option<AzureKeyVaultCloudInfo>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AzureKeyVaultCredentials {
    pub client_id: String,
    pub tenant_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<ValueFromSecretSource>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AzureKeyVaultSecret {
    pub parameter: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AzureKeyVaultCloudInfo {
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(
        rename = "keyVaultResourceURL",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub key_vault_resource_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_directory_endpoint: Option<String>,
}

/// `valueFrom.secretKeyRef`: a credential read from a Secret.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ValueFromSecretSource {
    pub value_from: ValueFromSecret,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ValueFromSecret {
    pub secret_key_ref: SecretKeyRef,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SecretKeyRef {
    pub name: String,
    pub key: String,
}

/// Parameters read from Google Secret Manager.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcpSecretManager {
    pub secrets: Vec<GcpSecretManagerSecret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<GcpCredentials>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_identity: Option<AuthPodIdentity>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcpCredentials {
    pub client_secret: ValueFromSecretSource,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GcpSecretManagerSecret {
    pub parameter: String,
    pub id: String,
    /// `latest` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// Parameters read from AWS Secrets Manager.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsSecretManager {
    pub secrets: Vec<AwsSecretManagerSecret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<AwsSecretManagerCredentials>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_identity: Option<AuthPodIdentity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsSecretManagerCredentials {
    pub access_key: ValueFromSecretSource,
    pub access_secret_key: ValueFromSecretSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<ValueFromSecretSource>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsSecretManagerSecret {
    pub parameter: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_stage: Option<String>,
    /// A key inside a JSON secret value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<String>,
}

/// Fills `parameter` with a token minted for `serviceAccountName`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BoundServiceAccountToken {
    pub parameter: String,
    pub service_account_name: String,
}

/// OAuth2 client-credentials settings handed to scalers that support them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OAuth2 {
    /// `clientCredentials` when unset.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "clientCredentials"))]
    pub type_: Option<OAuth2Type>,
    pub client_id: String,
    pub client_secret: ValueFromSecretSource,
    pub token_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_url_params: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum OAuth2Type {
    #[default]
    ClientCredentials,
}
