//! Trigger authentication and container environment resolution against kube-sim: the order in
//! which TriggerAuthentication sources overwrite each other, ClusterTriggerAuthentications
//! reading the cluster object namespace, `envFrom` prefixes, `$(VAR)` expansion, optional
//! references, and errors and `Debug` output that never carry a secret value.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, PodSpec, Secret, ServiceAccount};
use keda_operator::auth::{AuthError, Resolver};
use keda_operator_crd::{
    AuthenticationKind, AuthenticationRef, ClusterTriggerAuthentication, TriggerAuthentication,
};
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::{Value, json};

/// The scaled objects' namespace.
const NS: &str = "apps";
/// Where ClusterTriggerAuthentications read their Secrets and ConfigMaps.
const CLUSTER_NS: &str = "keda";
/// Secret values; none may ever show in an error or `Debug` output.
const PASSWORD: &str = "pw-9f8e7d6c";
const SECRET_USER: &str = "user-from-secret-3b2a";
const TOKEN: &str = "token-5c4d3e2f";

async fn start() -> (kube_sim::KubeSim, Client) {
    let sim = kube_sim::start(kube_sim::Config {
        namespaces: vec![NS.to_owned(), CLUSTER_NS.to_owned()],
        ..kube_sim::Config::default()
    })
    .await
    .unwrap();
    let client = sim.client().unwrap();
    for crd in keda_operator_crd::crds() {
        kube_sim::client::install_crd(&client, &crd).await.unwrap();
    }
    (sim, client)
}

async fn create<K>(client: &Client, namespace: Option<&str>, object: Value)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace.unwrap_or(NS));
    let object: K = serde_json::from_value(object).unwrap();
    api.create(&PostParams::default(), &object).await.unwrap();
}

async fn secret(client: &Client, namespace: &str, name: &str, data: &[(&str, &str)]) {
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    };
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    api.create(&PostParams::default(), &secret).await.unwrap();
}

async fn config_map(client: &Client, namespace: &str, name: &str, data: &[(&str, &str)]) {
    create::<ConfigMap>(
        client,
        Some(namespace),
        json!({
            "metadata": {"name": name},
            "data": data.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect::<serde_json::Map<_, _>>(),
        }),
    )
    .await;
}

async fn trigger_auth(client: &Client, name: &str, spec: Value) {
    create::<TriggerAuthentication>(
        client,
        None,
        json!({"apiVersion": "keda.sh/v1alpha1", "kind": "TriggerAuthentication", "metadata": {"name": name}, "spec": spec}),
    )
    .await;
}

async fn cluster_trigger_auth(client: &Client, name: &str, spec: Value) {
    let api: Api<ClusterTriggerAuthentication> = Api::all(client.clone());
    let object: ClusterTriggerAuthentication = serde_json::from_value(json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ClusterTriggerAuthentication",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap();
    api.create(&PostParams::default(), &object).await.unwrap();
}

fn pod_spec(spec: Value) -> PodSpec {
    serde_json::from_value(spec).unwrap()
}

fn ta_ref(name: &str) -> AuthenticationRef {
    AuthenticationRef {
        name: name.to_owned(),
        kind: None,
    }
}

fn cta_ref(name: &str) -> AuthenticationRef {
    AuthenticationRef {
        name: name.to_owned(),
        kind: Some(AuthenticationKind::ClusterTriggerAuthentication),
    }
}

fn resolver(client: &Client) -> Resolver {
    Resolver::new(client.clone(), NS, CLUSTER_NS)
}

/// Asserts that no secret value shows in `text`.
#[track_caller]
fn assert_no_secret(text: &str) {
    for value in [PASSWORD, SECRET_USER, TOKEN] {
        assert!(!text.contains(value), "a secret value leaked: {text}");
    }
}

#[tokio::test]
async fn secrets_overwrite_config_maps_which_overwrite_the_environment() {
    let (_sim, client) = start().await;
    secret(
        &client,
        NS,
        "creds",
        &[("user", SECRET_USER), ("password", PASSWORD)],
    )
    .await;
    config_map(
        &client,
        NS,
        "settings",
        &[("user", "user-from-config-map"), ("host", "db.apps")],
    )
    .await;
    trigger_auth(
        &client,
        "db-auth",
        json!({
            "env": [
                {"parameter": "user", "name": "DB_USER"},
                {"parameter": "region", "name": "REGION"},
                {"parameter": "sidecarPort", "name": "PROXY_PORT", "containerName": "proxy"},
            ],
            "configMapTargetRef": [
                {"parameter": "user", "name": "settings", "key": "user"},
                {"parameter": "host", "name": "settings", "key": "host"},
            ],
            "secretTargetRef": [
                {"parameter": "user", "name": "creds", "key": "user"},
                {"parameter": "password", "name": "creds", "key": "password"},
            ],
        }),
    )
    .await;
    // `app` is the envSourceContainerName; the first container is the proxy.
    let spec = pod_spec(json!({"containers": [
        {"name": "proxy", "env": [{"name": "PROXY_PORT", "value": "15000"}, {"name": "REGION", "value": "proxy-region"}]},
        {"name": "app", "env": [{"name": "DB_USER", "value": "user-from-env"}, {"name": "REGION", "value": "eu-west-1"}]},
    ]}));

    let resolved = resolver(&client)
        .auth_params(&ta_ref("db-auth"), Some(&spec), Some("app"))
        .await
        .unwrap();

    let want: BTreeMap<String, String> = [
        ("host", "db.apps"),
        ("password", PASSWORD),
        ("region", "eu-west-1"),
        ("sidecarPort", "15000"),
        ("user", SECRET_USER),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(resolved.params, want);
    assert_eq!(resolved.pod_identity, None);
    assert_no_secret(&format!("{resolved:?}"));
    assert!(format!("{resolved:?}").contains("password"));

    // Without envSourceContainerName the first container is the target.
    trigger_auth(
        &client,
        "region",
        json!({"env": [{"parameter": "region", "name": "REGION"}]}),
    )
    .await;
    let resolved = resolver(&client)
        .auth_params(&ta_ref("region"), Some(&spec), None)
        .await
        .unwrap();
    assert_eq!(resolved.params["region"], "proxy-region");
}

#[tokio::test]
async fn configmaps_overwrite_the_environment() {
    let (_sim, client) = start().await;
    config_map(&client, NS, "settings", &[("host", "from-config-map")]).await;
    trigger_auth(
        &client,
        "auth",
        json!({
            "env": [{"parameter": "host", "name": "HOST"}, {"parameter": "port", "name": "PORT"}],
            "configMapTargetRef": [{"parameter": "host", "name": "settings", "key": "host"}],
        }),
    )
    .await;
    let spec = pod_spec(json!({"containers": [
        {"name": "app", "env": [{"name": "HOST", "value": "from-env"}, {"name": "PORT", "value": "5672"}]},
    ]}));
    let resolved = resolver(&client)
        .auth_params(&ta_ref("auth"), Some(&spec), None)
        .await
        .unwrap();
    assert_eq!(resolved.params["host"], "from-config-map");
    assert_eq!(resolved.params["port"], "5672");
}

#[tokio::test]
async fn cluster_trigger_authentications_read_the_cluster_object_namespace() {
    let (_sim, client) = start().await;
    secret(
        &client,
        CLUSTER_NS,
        "shared-creds",
        &[("password", PASSWORD)],
    )
    .await;
    // A Secret of the same name in the scaled object's namespace must not be used.
    secret(
        &client,
        NS,
        "shared-creds",
        &[("password", "the-namespace-copy")],
    )
    .await;
    config_map(
        &client,
        CLUSTER_NS,
        "shared-settings",
        &[("host", "central")],
    )
    .await;
    config_map(&client, NS, "only-in-apps", &[("host", "local")]).await;
    cluster_trigger_auth(
        &client,
        "shared",
        json!({
            "secretTargetRef": [{"parameter": "password", "name": "shared-creds", "key": "password"}],
            "configMapTargetRef": [{"parameter": "host", "name": "shared-settings", "key": "host"}],
        }),
    )
    .await;
    let resolved = resolver(&client)
        .auth_params(&cta_ref("shared"), None, None)
        .await
        .unwrap();
    assert_eq!(resolved.params["password"], PASSWORD);
    assert_eq!(resolved.params["host"], "central");

    // A ConfigMap that exists only in the scaled object's namespace is not found.
    cluster_trigger_auth(
        &client,
        "local",
        json!({"configMapTargetRef": [{"parameter": "host", "name": "only-in-apps", "key": "host"}]}),
    )
    .await;
    let error = resolver(&client)
        .auth_params(&cta_ref("local"), None, None)
        .await
        .unwrap_err();
    assert!(matches!(error, AuthError::NotFound { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        "ConfigMap keda/only-in-apps not found",
        "{error:?}"
    );

    // A TriggerAuthentication of that name does not stand in for the cluster one.
    let error = resolver(&client)
        .auth_params(&cta_ref("missing"), None, None)
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "ClusterTriggerAuthentication missing not found"
    );
}

#[tokio::test]
async fn container_env_reads_env_from_with_prefixes_then_env_with_expansion() {
    let (_sim, client) = start().await;
    config_map(
        &client,
        NS,
        "app-config",
        &[("HOST", "db"), ("LEVEL", "info")],
    )
    .await;
    secret(&client, NS, "app-secret", &[("TOKEN", TOKEN)]).await;
    let spec = pod_spec(json!({"containers": [
        {"name": "first", "env": [{"name": "ONLY_FIRST", "value": "1"}]},
        {"name": "app",
         "envFrom": [
            {"configMapRef": {"name": "app-config"}, "prefix": "CFG_"},
            {"secretRef": {"name": "app-secret"}},
            {"configMapRef": {"name": "no-such-config", "optional": true}},
            {"secretRef": {"name": "no-such-secret", "optional": true}},
         ],
         "env": [
            {"name": "EARLY", "value": "$(CFG_HOST):$(PORT)"},
            {"name": "PORT", "value": "8080"},
            {"name": "URL", "value": "http://$(CFG_HOST):$(PORT)/$$(CFG_HOST)?cost=$$5"},
            {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "app-secret", "key": "TOKEN"}}},
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "app-config", "key": "LEVEL"}}},
            {"name": "MAYBE_SECRET", "valueFrom": {"secretKeyRef": {"name": "no-such-secret", "key": "x", "optional": true}}},
            {"name": "MAYBE_KEY", "valueFrom": {"configMapKeyRef": {"name": "app-config", "key": "nope", "optional": true}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
            {"name": "EMPTY", "value": ""},
            {"name": "CFG_LEVEL", "value": "debug"},
         ]},
    ]}));

    let env = resolver(&client)
        .container_env(Some(&spec), Some("app"))
        .await
        .unwrap();
    let want: BTreeMap<String, String> = [
        ("CFG_HOST", "db"),
        ("CFG_LEVEL", "debug"),
        ("EARLY", "db:$(PORT)"),
        ("EMPTY", ""),
        ("MODE", "info"),
        ("PASSWORD", TOKEN),
        ("PORT", "8080"),
        ("TOKEN", TOKEN),
        ("URL", "http://db:8080/$(CFG_HOST)?cost=$5"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(env, want);

    // The first container when none is named; an empty environment without a pod template.
    let env = resolver(&client)
        .container_env(Some(&spec), None)
        .await
        .unwrap();
    assert_eq!(env.keys().collect::<Vec<_>>(), ["ONLY_FIRST"]);
    let env = resolver(&client).container_env(None, None).await.unwrap();
    assert!(env.is_empty());

    let error = resolver(&client)
        .container_env(Some(&spec), Some("missing"))
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "container \"missing\" not found in the scale target's pod template"
    );
}

#[tokio::test]
async fn required_missing_objects_and_keys_are_errors_naming_them_without_values() {
    let (_sim, client) = start().await;
    secret(
        &client,
        NS,
        "creds",
        &[("password", PASSWORD), ("user", SECRET_USER)],
    )
    .await;
    trigger_auth(
        &client,
        "missing-key",
        json!({"secretTargetRef": [
            {"parameter": "password", "name": "creds", "key": "password"},
            {"parameter": "token", "name": "creds", "key": "token"},
        ]}),
    )
    .await;
    trigger_auth(
        &client,
        "missing-secret",
        json!({"secretTargetRef": [{"parameter": "password", "name": "gone", "key": "password"}]}),
    )
    .await;
    trigger_auth(
        &client,
        "missing-env",
        json!({"env": [{"parameter": "password", "name": "DB_PASSWORD"}]}),
    )
    .await;
    let auth = resolver(&client);

    let error = auth
        .auth_params(&ta_ref("missing-key"), None, None)
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), "Secret apps/creds has no key \"token\"");
    assert_no_secret(&format!("{error} {error:?}"));

    let error = auth
        .auth_params(&ta_ref("missing-secret"), None, None)
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), "Secret apps/gone not found");

    let error = auth
        .auth_params(&ta_ref("nobody"), None, None)
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "TriggerAuthentication apps/nobody not found"
    );

    let spec = pod_spec(
        json!({"containers": [{"name": "app", "env": [{"name": "OTHER", "value": "x"}]}]}),
    );
    let error = auth
        .auth_params(&ta_ref("missing-env"), Some(&spec), None)
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "TriggerAuthentication apps/missing-env: environment variable \"DB_PASSWORD\" is not set in container \"app\""
    );
    let error = auth
        .auth_params(&ta_ref("missing-env"), None, None)
        .await
        .unwrap_err();
    assert!(
        matches!(error, AuthError::NoPodTemplate { .. }),
        "{error:?}"
    );

    // Container environment: a required Secret, key or ConfigMap that is missing.
    for (env, message) in [
        (
            json!({"envFrom": [{"secretRef": {"name": "gone"}}]}),
            "Secret apps/gone not found",
        ),
        (
            json!({"envFrom": [{"configMapRef": {"name": "gone"}}]}),
            "ConfigMap apps/gone not found",
        ),
        (
            json!({"env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "nope"}}}]}),
            "Secret apps/creds has no key \"nope\"",
        ),
        (
            json!({"env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "password"}}}]}),
            "Secret apps/gone not found",
        ),
    ] {
        let mut container = env;
        container["name"] = json!("app");
        let spec = pod_spec(json!({"containers": [container]}));
        let error = auth.container_env(Some(&spec), None).await.unwrap_err();
        assert_eq!(error.to_string(), message);
        assert_no_secret(&format!("{error:?}"));
    }
    assert_no_secret(&format!("{auth:?}"));
}

#[tokio::test]
async fn unsupported_sources_are_refused_by_name() {
    let (_sim, client) = start().await;
    trigger_auth(
        &client,
        "vault",
        json!({
            "secretTargetRef": [{"parameter": "password", "name": "creds", "key": "password"}],
            "hashiCorpVault": {"address": "https://vault:8200", "authentication": "token", "secrets": []},
        }),
    )
    .await;
    cluster_trigger_auth(&client, "file", json!({"filePath": "/auth/params.json"})).await;
    trigger_auth(
        &client,
        "tokens",
        json!({"boundServiceAccountToken": [{"parameter": "token", "serviceAccountName": "reader"}]}),
    )
    .await;
    let auth = resolver(&client);
    for (auth_ref, message) in [
        (
            ta_ref("vault"),
            "TriggerAuthentication apps/vault: hashiCorpVault is not supported yet",
        ),
        (
            cta_ref("file"),
            "ClusterTriggerAuthentication file: filePath is not supported yet",
        ),
        (
            ta_ref("tokens"),
            "TriggerAuthentication apps/tokens: boundServiceAccountToken is not supported yet",
        ),
    ] {
        let error = auth.auth_params(&auth_ref, None, None).await.unwrap_err();
        assert!(matches!(error, AuthError::Unsupported { .. }), "{error:?}");
        assert_eq!(error.to_string(), message);
    }
}

#[tokio::test]
async fn pod_identity_is_returned_beside_the_parameters() {
    let (_sim, client) = start().await;
    trigger_auth(
        &client,
        "aws-role",
        json!({"podIdentity": {"provider": "aws", "roleArn": "arn:aws:iam::1:role/keda"}}),
    )
    .await;
    trigger_auth(
        &client,
        "aws-workload",
        json!({"podIdentity": {"provider": "aws", "identityOwner": "workload"}}),
    )
    .await;
    trigger_auth(
        &client,
        "azure",
        json!({"podIdentity": {"provider": "azure-workload", "identityId": "client-1"}}),
    )
    .await;
    trigger_auth(
        &client,
        "azure-empty",
        json!({"podIdentity": {"provider": "azure-workload", "identityId": ""}}),
    )
    .await;
    trigger_auth(
        &client,
        "none",
        json!({"podIdentity": {"provider": "none"}}),
    )
    .await;
    create::<ServiceAccount>(
        &client,
        None,
        json!({"metadata": {"name": "worker", "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/worker"}}}),
    )
    .await;
    let auth = resolver(&client);

    let resolved = auth
        .auth_params(&ta_ref("aws-role"), None, None)
        .await
        .unwrap();
    assert_eq!(resolved.params["awsRoleArn"], "arn:aws:iam::1:role/keda");
    let identity = resolved.pod_identity.unwrap();
    assert_eq!(
        serde_json::to_value(identity.provider).unwrap(),
        json!("aws")
    );

    let spec = pod_spec(json!({"serviceAccountName": "worker", "containers": [{"name": "app"}]}));
    let resolved = auth
        .auth_params(&ta_ref("aws-workload"), Some(&spec), None)
        .await
        .unwrap();
    assert_eq!(resolved.params["awsRoleArn"], "arn:aws:iam::1:role/worker");

    let resolved = auth
        .auth_params(&ta_ref("azure"), None, None)
        .await
        .unwrap();
    assert!(resolved.params.is_empty());
    assert_eq!(
        resolved.pod_identity.unwrap().identity_id.as_deref(),
        Some("client-1")
    );
    let error = auth
        .auth_params(&ta_ref("azure-empty"), None, None)
        .await
        .unwrap_err();
    assert!(matches!(error, AuthError::Invalid { .. }), "{error:?}");

    let resolved = auth.auth_params(&ta_ref("none"), None, None).await.unwrap();
    assert_eq!(resolved.pod_identity, None);
}

#[tokio::test]
async fn oauth2_fills_the_client_credentials_parameters() {
    let (_sim, client) = start().await;
    secret(&client, NS, "oauth", &[("secret", PASSWORD)]).await;
    trigger_auth(
        &client,
        "oauth",
        json!({"oauth2": {
            "clientId": "keda",
            "clientSecret": {"valueFrom": {"secretKeyRef": {"name": "oauth", "key": "secret"}}},
            "tokenUrl": "https://idp.example/token",
            "scopes": ["read", "metrics"],
            "tokenUrlParams": {"audience": "api server"},
        }}),
    )
    .await;
    let resolved = resolver(&client)
        .auth_params(&ta_ref("oauth"), None, None)
        .await
        .unwrap();
    let want: BTreeMap<String, String> = [
        ("clientID", "keda"),
        ("clientSecret", PASSWORD),
        ("endpointParams", "audience=api+server"),
        ("oauthTokenURI", "https://idp.example/token"),
        ("scopes", "read,metrics"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(resolved.params, want);
    assert_no_secret(&format!("{resolved:?}"));
}
