//! Writing ScaledObject status: conditions with KEDA's types and reasons, merge-patched on the
//! status subresource only when something changed.

use keda_operator_crd::{
    Condition, ConditionStatus, ConditionType, ScaledObject, ScaledObjectStatus, reason,
};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};

/// Sets (or adds) a condition; returns whether it changed.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: ConditionType,
    status: ConditionStatus,
    reason: &str,
    message: &str,
) -> bool {
    let wanted = Condition {
        type_: type_.as_str().to_owned(),
        status,
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
    };
    match conditions.iter_mut().find(|c| c.type_ == wanted.type_) {
        Some(existing) if *existing == wanted => false,
        Some(existing) => {
            *existing = wanted;
            true
        }
        None => {
            conditions.push(wanted);
            true
        }
    }
}

/// KEDA's initial conditions: Ready, Active and Fallback Unknown, Paused False.
pub fn initialize(conditions: &mut Vec<Condition>) -> bool {
    let mut changed = false;
    for type_ in [
        ConditionType::Ready,
        ConditionType::Active,
        ConditionType::Fallback,
    ] {
        if keda_operator_crd::conditions::find(conditions, type_).is_none() {
            conditions.push(Condition {
                type_: type_.as_str().to_owned(),
                status: ConditionStatus::Unknown,
                reason: None,
                message: None,
            });
            changed = true;
        }
    }
    if keda_operator_crd::conditions::find(conditions, ConditionType::Paused).is_none() {
        changed |= set(
            conditions,
            ConditionType::Paused,
            ConditionStatus::False,
            reason::SCALED_OBJECT_UNPAUSED,
            "",
        );
    }
    changed
}

/// The status condition of a type, if present.
pub fn get(status: Option<&ScaledObjectStatus>, type_: ConditionType) -> Option<&Condition> {
    status
        .and_then(|s| s.conditions.as_deref())
        .and_then(|c| keda_operator_crd::conditions::find(c, type_))
}

/// Whether a condition is True.
pub fn is_true(status: Option<&ScaledObjectStatus>, type_: ConditionType) -> bool {
    get(status, type_).is_some_and(|c| c.status == ConditionStatus::True)
}

/// A status change collected during a reconcile or a polling cycle and written once. The
/// conditions are applied to a fresh read of the object, so the controller (Ready, Paused) and
/// the scale loop (Active, Fallback, trigger errors) do not overwrite each other's conditions.
#[derive(Debug, Default)]
pub struct Update {
    initialize: bool,
    conditions: Vec<(ConditionType, ConditionStatus, String, String)>,
    fields: serde_json::Map<String, serde_json::Value>,
}

impl Update {
    /// An update that also adds KEDA's initial conditions where missing.
    pub fn initializing() -> Self {
        Self {
            initialize: true,
            ..Self::default()
        }
    }

    /// Sets a condition.
    pub fn condition(
        &mut self,
        type_: ConditionType,
        status: ConditionStatus,
        reason: &str,
        message: &str,
    ) {
        self.conditions.retain(|(t, ..)| *t != type_);
        self.conditions
            .push((type_, status, reason.to_owned(), message.to_owned()));
    }

    /// Sets a status field when it differs from `so`'s (`null` removes it).
    pub fn field(&mut self, so: &ScaledObject, name: &str, value: serde_json::Value) {
        let current = serde_json::to_value(so.status.as_ref())
            .ok()
            .and_then(|s| s.get(name).cloned())
            .unwrap_or(serde_json::Value::Null);
        if current == value {
            self.fields.remove(name);
        } else {
            self.fields.insert(name.to_owned(), value);
        }
    }

    /// Whether the conditions would change `so`'s.
    fn changes(&self, so: &ScaledObject) -> bool {
        let mut conditions = so
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let mut changed = self.initialize && initialize(&mut conditions);
        for (type_, status, reason, message) in &self.conditions {
            changed |= set(&mut conditions, *type_, *status, reason, message);
        }
        changed
    }

    /// Writes the changes, if any. Conditions are merged into a fresh read and written with
    /// its `resourceVersion`, so a concurrent writer's change is never overwritten: on a
    /// conflict the read and merge are repeated.
    pub async fn write(self, client: &kube::Client, so: &ScaledObject) -> Result<(), kube::Error> {
        if self.conditions.is_empty() && !self.initialize {
            if self.fields.is_empty() {
                return Ok(());
            }
            return patch(client, so, serde_json::Value::Object(self.fields)).await;
        }
        if self.fields.is_empty() && !self.changes(so) {
            // Nothing differs from the cached object: no read, no write (this is the common
            // case of a polling cycle). A stale cache only delays a change to the next cycle.
            return Ok(());
        }
        let api: Api<ScaledObject> =
            Api::namespaced(client.clone(), &so.namespace().unwrap_or_default());
        let mut attempt = 0;
        loop {
            attempt += 1;
            let Some(fresh) = api.get_opt(&so.name_any()).await? else {
                return Ok(());
            };
            let mut conditions = fresh
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default();
            let mut changed = self.initialize && initialize(&mut conditions);
            for (type_, status, reason, message) in &self.conditions {
                changed |= set(&mut conditions, *type_, *status, reason, message);
            }
            let mut fields = self.fields.clone();
            if changed {
                fields.insert(
                    "conditions".into(),
                    serde_json::to_value(&conditions).unwrap_or(serde_json::Value::Null),
                );
            }
            if fields.is_empty() {
                return Ok(());
            }
            let body = serde_json::json!({
                "metadata": { "resourceVersion": fresh.metadata.resource_version },
                "status": fields,
            });
            match api
                .patch_status(&so.name_any(), &PatchParams::default(), &Patch::Merge(body))
                .await
            {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(status)) if status.code == 409 && attempt < 5 => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Merge-patches `status` with `patch` (a partial status object; `null` removes a field).
pub async fn patch(
    client: &kube::Client,
    so: &ScaledObject,
    patch: serde_json::Value,
) -> Result<(), kube::Error> {
    let api: Api<ScaledObject> =
        Api::namespaced(client.clone(), &so.namespace().unwrap_or_default());
    api.patch_status(
        &so.name_any(),
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "status": patch })),
    )
    .await
    .map(|_| ())
}
