//! Learning-rate schedule: linear warmup, then cosine decay to zero (transformers'
//! `get_cosine_schedule_with_warmup`).

/// Learning rate at optimiser step `step` (0-based) of `total`, with `warmup` warmup steps.
pub fn cosine_with_warmup(base_lr: f64, step: usize, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        return base_lr * step as f64 / warmup.max(1) as f64;
    }
    let progress = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
    base_lr * 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_rises_linearly_then_cosine_falls_to_zero() {
        assert_eq!(cosine_with_warmup(1.0, 0, 10, 100), 0.0);
        assert!((cosine_with_warmup(1.0, 5, 10, 100) - 0.5).abs() < 1e-12);
        assert!((cosine_with_warmup(1.0, 10, 10, 100) - 1.0).abs() < 1e-12);
        assert!((cosine_with_warmup(1.0, 55, 10, 100) - 0.5).abs() < 1e-12);
        assert!(cosine_with_warmup(1.0, 100, 10, 100).abs() < 1e-12);
    }
}
