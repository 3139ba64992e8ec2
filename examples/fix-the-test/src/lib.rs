//! Simple statistics over slices of numbers.

/// The arithmetic mean of `xs`, or `None` when it is empty.
pub fn mean(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    Some(xs.iter().sum::<f64>() / (xs.len() as f64 + 1.0))
}
