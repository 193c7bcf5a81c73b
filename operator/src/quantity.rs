//! Kubernetes quantities from metric values, formatted as the apiserver canonicalises them.

/// A metric value in thousandths, KEDA's precision; NaN, infinities and negatives become 0.
pub fn milli(value: f64) -> i64 {
    if !value.is_finite() || value <= 0.0 {
        return 0;
    }
    #[expect(
        clippy::cast_possible_truncation,
        reason = "saturating float-to-int conversion is intended for huge values"
    )]
    let milli = (value * 1000.0).round() as i64;
    milli
}

/// The canonical decimal form of a milli value: `1500m`, `5`, `20k`, `3M`.
pub fn format_milli(milli: i64) -> String {
    if milli % 1000 != 0 {
        return format!("{milli}m");
    }
    let mut whole = milli / 1000;
    if whole == 0 {
        return "0".to_owned();
    }
    for suffix in ["", "k", "M", "G", "T", "P"] {
        if whole % 1000 != 0 {
            return format!("{whole}{suffix}");
        }
        whole /= 1000;
    }
    format!("{whole}E")
}

/// The canonical quantity of a float metric value.
pub fn format(value: f64) -> String {
    format_milli(milli(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        for (value, text) in [
            (5.0, "5"),
            (0.5, "500m"),
            (1.5, "1500m"),
            (1500.0, "1500"),
            (1000.0, "1k"),
            (20_000.0, "20k"),
            (3_000_000.0, "3M"),
            (0.0, "0"),
            (-2.0, "0"),
            (f64::NAN, "0"),
            (0.0004, "0"),
            (0.0006, "1m"),
        ] {
            assert_eq!(format(value), text, "{value}");
        }
    }
}
