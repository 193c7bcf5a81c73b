//! Request paths of the Kubernetes API, parsed.

/// What a request path addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    Version,
    Health,
    CoreVersions,
    Groups,
    Group(String),
    GroupVersion(String, String),
    OpenApiV2,
    OpenApiV3Index,
    OpenApiV3(String),
    Resource(ResourcePath),
}

/// A path under a group version that names a resource (and maybe an object and subresource).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourcePath {
    pub group: String,
    pub version: String,
    /// Set for namespaced requests (`/namespaces/<ns>/<plural>...`).
    pub namespace: Option<String>,
    pub plural: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// Splits `/api/v1/...` and `/apis/<group>/<version>/...`; `is_namespaced` tells whether a
/// plural is a namespaced resource of that group version (needed to read
/// `/api/v1/namespaces/<x>/...` correctly).
pub fn parse(path: &str, is_namespaced: impl Fn(&str, &str, &str) -> bool) -> Option<Route> {
    let segments: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match segments.as_slice() {
        ["version"] => return Some(Route::Version),
        ["healthz" | "livez" | "readyz", ..] => return Some(Route::Health),
        ["api"] => return Some(Route::CoreVersions),
        ["apis"] => return Some(Route::Groups),
        ["apis", group] => return Some(Route::Group((*group).to_owned())),
        ["openapi", "v2"] | ["swagger.json"] => return Some(Route::OpenApiV2),
        ["openapi", "v3"] => return Some(Route::OpenApiV3Index),
        ["openapi", "v3", rest @ ..] => return Some(Route::OpenApiV3(rest.join("/"))),
        _ => {}
    }
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => (String::new(), (*version).to_owned(), rest),
        ["apis", group, version, rest @ ..] => ((*group).to_owned(), (*version).to_owned(), rest),
        _ => return None,
    };
    if rest.is_empty() {
        return Some(if group.is_empty() {
            Route::GroupVersion(String::new(), version)
        } else {
            Route::GroupVersion(group, version)
        });
    }
    let owned = |s: &&str| (*s).to_owned();
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, tail @ ..] if is_namespaced(&group, &version, plural) => (
            Some((*ns).to_owned()),
            std::iter::once(*plural)
                .chain(tail.iter().copied())
                .collect::<Vec<_>>(),
        ),
        _ => (None, rest.to_vec()),
    };
    let plural = rest.first().map(owned)?;
    if rest.len() > 3 {
        return None;
    }
    Some(Route::Resource(ResourcePath {
        group,
        version,
        namespace,
        plural,
        name: rest.get(1).map(owned),
        subresource: rest.get(2).map(owned),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn namespaced(_: &str, _: &str, plural: &str) -> bool {
        plural != "namespaces" && plural != "status"
    }

    fn resource(path: &str) -> ResourcePath {
        match parse(path, namespaced) {
            Some(Route::Resource(r)) => r,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn parses_namespaced_and_cluster_paths() {
        let r = resource("/apis/apps/v1/namespaces/shop/deployments/web/scale");
        assert_eq!(
            (
                r.group.as_str(),
                r.namespace.as_deref(),
                r.plural.as_str(),
                r.name.as_deref(),
                r.subresource.as_deref()
            ),
            (
                "apps",
                Some("shop"),
                "deployments",
                Some("web"),
                Some("scale")
            )
        );
        let r = resource("/api/v1/namespaces/shop");
        assert_eq!(
            (r.namespace, r.plural.as_str(), r.name.as_deref()),
            (None, "namespaces", Some("shop"))
        );
        let r = resource("/api/v1/namespaces/shop/status");
        assert_eq!(
            (
                r.plural.as_str(),
                r.name.as_deref(),
                r.subresource.as_deref()
            ),
            ("namespaces", Some("shop"), Some("status"))
        );
        let r = resource("/api/v1/pods");
        assert_eq!((r.namespace, r.name), (None, None));
        assert_eq!(
            parse("/apis/keda.sh/v1alpha1", namespaced),
            Some(Route::GroupVersion("keda.sh".into(), "v1alpha1".into()))
        );
        assert_eq!(
            parse("/api/v1", namespaced),
            Some(Route::GroupVersion(String::new(), "v1".into()))
        );
        assert_eq!(parse("/nope", namespaced), None);
    }
}
