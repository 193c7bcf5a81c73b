//! Trigger authentication: TriggerAuthentication / ClusterTriggerAuthentication parameters and
//! the target container's environment.
