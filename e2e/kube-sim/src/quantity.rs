//! Kubernetes resource quantities (`1500m`, `2`, `1.5k`, `64Mi`) in thousandths.

/// Parses a quantity into milli-units; `None` for malformed input or overflow.
pub fn to_milli(text: &str) -> Option<i64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let factor: f64 = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "Ki" => 1024.0,
        "Mi" => 1_048_576.0,
        "Gi" => 1_073_741_824.0,
        "Ti" => 1_099_511_627_776.0,
        _ => {
            let (mantissa, exponent) = suffix.split_once(['e', 'E'])?;
            if !mantissa.is_empty() {
                return None;
            }
            10f64.powi(exponent.parse().ok()?)
        }
    };
    let milli = (value * factor * 1000.0).ceil();
    if milli.is_finite() && milli.abs() < 9.0e15 {
        #[allow(clippy::cast_possible_truncation, reason = "bounded above")]
        Some(milli as i64)
    } else {
        None
    }
}

/// Renders milli-units the way the apiserver canonicalizes them: whole numbers plainly, the rest
/// with an `m` suffix.
pub fn from_milli(milli: i64) -> String {
    if milli % 1000 == 0 {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_renders_quantities() {
        assert_eq!(to_milli("1500m"), Some(1500));
        assert_eq!(to_milli("3"), Some(3000));
        assert_eq!(to_milli("2.5"), Some(2500));
        assert_eq!(to_milli("1k"), Some(1_000_000));
        assert_eq!(to_milli("64Mi"), Some(67_108_864_000));
        assert_eq!(to_milli("1e3"), Some(1_000_000));
        assert_eq!(to_milli("abc"), None);
        assert_eq!(from_milli(3000), "3");
        assert_eq!(from_milli(1500), "1500m");
    }
}
