//! Placeholder until the scaler lands.
use super::{Scaler, ScalerError, Services, TriggerInput};

pub fn build(input: &TriggerInput, _: &Services) -> Result<Box<dyn Scaler>, ScalerError> {
    Err(ScalerError::UnknownType(input.trigger_type.clone()))
}
