use std::time::Duration;

pub struct Summary {
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub total: Duration,
}

impl Summary {
    pub fn of(samples: &mut [Duration]) -> Self {
        samples.sort();
        let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
        Self {
            p50: at(0.5),
            p99: at(0.99),
            max: *samples.last().unwrap_or(&Duration::ZERO),
            total: samples.iter().sum(),
        }
    }
}
