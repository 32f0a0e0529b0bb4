//! Purchase order restrictions: the client's may only narrow the corp's, and a session must
//! satisfy both.

use xeno_schemas::documents::{EnvironmentalRequirements, Restrictions};

/// The first way `client` widens `corp`, if any.
pub fn widening(corp: &Restrictions, client: &Restrictions) -> Option<String> {
    if corp.must_validate == Some(true) && client.must_validate == Some(false) {
        return Some(
            "MustValidate: the corp requires validation; the client may not waive it".to_owned(),
        );
    }
    if let Some(widened) = list_widening(
        "Servers",
        corp.servers.as_deref(),
        client.servers.as_deref(),
    ) {
        return Some(widened);
    }
    if let Some(widened) = list_widening(
        "EnvTypes",
        corp.env_types.as_deref(),
        client.env_types.as_deref(),
    ) {
        return Some(widened);
    }
    let caps = [
        ("MaxCPUmsps", corp.max_cpu_msps, client.max_cpu_msps),
        ("MaxMemoryMB", corp.max_memory_mb, client.max_memory_mb),
        (
            "MaxAmount",
            corp.max_amount.map(|m| m.minor),
            client.max_amount.map(|m| m.minor),
        ),
    ];
    for (name, corp_cap, client_cap) in caps {
        if let (Some(corp_cap), Some(client_cap)) = (corp_cap, client_cap)
            && client_cap > corp_cap
        {
            return Some(format!(
                "{name}: {client_cap} is above the corp's {corp_cap}"
            ));
        }
    }
    if let (Some(corp_time), Some(client_time)) = (corp.not_after, client.not_after)
        && client_time > corp_time
    {
        return Some("NotAfter: later than the corp's".to_owned());
    }
    None
}

fn list_widening(name: &str, corp: Option<&[String]>, client: Option<&[String]>) -> Option<String> {
    let (corp, client) = (corp?, client?);
    client
        .iter()
        .find(|item| !corp.contains(item))
        .map(|item| format!("{name}: {item} is not among the corp's {}", corp.join(", ")))
}

/// The first restriction in `restrictions` that a session of `requirements` on `server_id`
/// breaks, if any. `whose` names the restrictions' author in the message.
pub fn unmet(
    restrictions: &Restrictions,
    whose: &str,
    server_id: &str,
    requirements: &EnvironmentalRequirements,
) -> Option<String> {
    if let Some(servers) = &restrictions.servers
        && !servers.iter().any(|server| server == server_id)
    {
        return Some(format!("the {whose} restricts the order to other servers"));
    }
    if let Some(env_types) = &restrictions.env_types
        && !env_types.contains(&requirements.env_type)
    {
        return Some(format!(
            "the {whose} restricts the order to environment types {}, not {}",
            env_types.join(", "),
            requirements.env_type
        ));
    }
    let caps = [
        (
            "CPUmsps",
            restrictions.max_cpu_msps,
            requirements.qos.cpu_msps,
        ),
        (
            "MemoryMB",
            restrictions.max_memory_mb,
            requirements.qos.memory_mb,
        ),
    ];
    for (name, cap, asked) in caps {
        match (cap, asked) {
            (Some(cap), None) => {
                return Some(format!(
                    "the {whose} caps {name} at {cap}, so the requirements must state QoS/{name}"
                ));
            }
            (Some(cap), Some(asked)) if asked > cap => {
                return Some(format!(
                    "the requirements ask for {name} {asked}; the {whose} caps it at {cap}"
                ));
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_restrictions_may_only_narrow() {
        let corp = Restrictions {
            must_validate: Some(true),
            env_types: Some(vec!["Wasm".into(), "Linux".into()]),
            max_cpu_msps: Some(500),
            ..Restrictions::default()
        };
        let narrower = Restrictions {
            env_types: Some(vec!["Wasm".into()]),
            max_cpu_msps: Some(200),
            ..Restrictions::default()
        };
        assert_eq!(widening(&corp, &narrower), None);
        let wider_types = Restrictions {
            env_types: Some(vec!["Process".into()]),
            ..Restrictions::default()
        };
        assert!(
            widening(&corp, &wider_types)
                .expect("widens")
                .starts_with("EnvTypes")
        );
        let wider_cpu = Restrictions {
            max_cpu_msps: Some(501),
            ..Restrictions::default()
        };
        assert!(
            widening(&corp, &wider_cpu)
                .expect("widens")
                .starts_with("MaxCPUmsps")
        );
        let waiver = Restrictions {
            must_validate: Some(false),
            ..Restrictions::default()
        };
        assert!(widening(&corp, &waiver).is_some());
    }

    #[test]
    fn sessions_must_meet_every_restriction() {
        let mut requirements = EnvironmentalRequirements::new("x", "Wasm");
        let restrictions = Restrictions {
            servers: Some(vec!["s1".into()]),
            max_cpu_msps: Some(200),
            ..Restrictions::default()
        };
        assert!(
            unmet(&restrictions, "client", "s2", &requirements)
                .expect("wrong server")
                .contains("other servers")
        );
        assert!(
            unmet(&restrictions, "client", "s1", &requirements)
                .expect("no cpu")
                .contains("must state QoS/CPUmsps")
        );
        requirements.qos.cpu_msps = Some(300);
        assert!(
            unmet(&restrictions, "client", "s1", &requirements)
                .expect("too much")
                .contains("caps it at 200")
        );
        requirements.qos.cpu_msps = Some(150);
        assert_eq!(unmet(&restrictions, "client", "s1", &requirements), None);
    }
}
