//! Integer and float conversions with Go's semantics where the upstream arithmetic relies on
//! them, saturating where Go would overflow.

pub(super) fn sum(values: impl Iterator<Item = i64>) -> i64 {
    values.fold(0, i64::saturating_add)
}

/// Float-to-int `as` saturates and maps NaN to 0: the sane answer for absurd ratios, where Go
/// leaves the overflow implementation-defined.
#[allow(
    clippy::cast_possible_truncation,
    reason = "saturating on purpose, see above"
)]
pub(super) fn ceil_to_i32(x: f64) -> i32 {
    x.ceil() as i32
}

/// Truncates toward zero like Go's integer conversion, saturating instead of overflowing.
#[allow(
    clippy::cast_possible_truncation,
    reason = "Go's truncation, saturating"
)]
pub(super) fn to_i64(x: f64) -> i64 {
    x as i64
}

/// Go converts milli-values to float64 the same lossy way; replica-sized values are exact.
#[allow(clippy::cast_precision_loss, reason = "as lossy as Go's conversion")]
pub(super) fn to_f64(v: i64) -> f64 {
    v as f64
}

pub(super) fn saturate_i32(v: i64) -> i32 {
    i32::try_from(v).unwrap_or(if v < 0 { i32::MIN } else { i32::MAX })
}

pub(super) fn len_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
