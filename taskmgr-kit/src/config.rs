//! What every task manager's configuration check says when a field cannot work: which
//! configuration, which field, and why.

/// A configuration that cannot work, naming the configuration and the field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {config}: {field} {problem}")]
pub struct ConfigError {
    /// The configuration (`VmConfig`, `WasmConfig`, ...).
    pub config: &'static str,
    /// The field at fault.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

/// `field` of `config` must be at least `min`.
pub fn at_least(
    config: &'static str,
    field: &'static str,
    value: u64,
    min: u64,
) -> Result<(), ConfigError> {
    if value < min {
        return Err(ConfigError {
            config,
            field,
            problem: format!("is {value}, must be at least {min}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_below_its_minimum_is_named_with_its_configuration() {
        assert_eq!(at_least("VmConfig", "tasks_max", 1, 1), Ok(()));
        let error = at_least("VmConfig", "tasks_max", 0, 1).expect_err("below");
        assert_eq!(
            error.to_string(),
            "invalid VmConfig: tasks_max is 0, must be at least 1"
        );
    }
}
