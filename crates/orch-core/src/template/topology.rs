//! How services relate: the rules between them (bounds, references, no dependency cycles,
//! no published port on an internal network), the order they start in, and which networks
//! each joins.

use std::collections::{BTreeMap, BTreeSet};

use super::services::{ClassNetwork, Condition, Service, ServiceClass, MAX_TOTAL_INSTANCES};
use crate::problem::{child, Problems};

/// The rules between services: bounds, references, no cycles, a healthy condition only on
/// a service with a health check, no published port on a network declared internal.
pub(crate) fn check_services(
    services: &BTreeMap<String, Service>,
    networks: &BTreeMap<ServiceClass, ClassNetwork>,
    pointer: &str,
    problems: &mut Problems,
) {
    let mut total = 0u32;
    for (name, service) in services {
        let service_pointer = child(pointer, name);
        total = total.saturating_add(service.instances);
        check_instance_bounds(service, &service_pointer, problems);
        for (index, dependency) in service.depends_on.iter().enumerate() {
            let dependency_pointer = child(&child(&service_pointer, "depends_on"), &index.to_string());
            match services.get(&dependency.service) {
                None => problems.push(
                    dependency_pointer,
                    format!("service '{}' is not defined in services", dependency.service),
                ),
                Some(_) if dependency.service == *name => {
                    problems.push(dependency_pointer, "a service cannot depend on itself")
                }
                Some(other) if dependency.condition == Condition::Healthy && other.healthcheck.is_none() => problems
                    .push(
                        dependency_pointer,
                        format!(
                            "'{}' has no healthcheck, so it can never be healthy",
                            dependency.service
                        ),
                    ),
                Some(_) => {}
            }
        }
        check_wiring(name, service, services, &service_pointer, problems);
        let declared_internal = networks.get(&service.class).is_some_and(|network| network.internal);
        if declared_internal && service.published_ports().next().is_some() {
            problems.push(
                child(&service_pointer, "ports"),
                format!(
                    "publishes a port, but the {} network is declared internal (networks.{}.internal)",
                    service.class.as_str(),
                    service.class.as_str()
                ),
            );
        }
    }
    if total > MAX_TOTAL_INSTANCES {
        problems.push(
            pointer,
            format!("{total} instances in all; at most {MAX_TOTAL_INSTANCES} are allowed"),
        );
    }
    if let Some(cycle) = find_cycle(services) {
        problems.push(
            child(&child(pointer, &cycle[0]), "depends_on"),
            format!("dependencies form a cycle: {}", cycle.join(" -> ")),
        );
    }
}

/// Every `{{orch.peers:SERVICE:PORT}}` names another service of the template.
fn check_wiring(
    name: &str,
    service: &Service,
    services: &BTreeMap<String, Service>,
    service_pointer: &str,
    problems: &mut Problems,
) {
    for (at, text) in service.texts() {
        for other in super::render::services_named(text) {
            if other == name || !services.contains_key(other) {
                problems.push(
                    format!("{service_pointer}{at}"),
                    format!("'{{{{orch.peers:{other}:…}}}}' must name another service of this template"),
                );
            }
        }
    }
}

/// The other services a service's texts are wired to.
pub fn wired_to(service: &Service) -> BTreeSet<&str> {
    service
        .texts()
        .flat_map(|(_, text)| super::render::services_named(text))
        .collect()
}

pub(crate) fn check_instance_bounds(service: &Service, service_pointer: &str, problems: &mut Problems) {
    if service.instances < service.min_instances {
        problems.push(
            child(service_pointer, "instances"),
            format!("{} is below min_instances {}", service.instances, service.min_instances),
        );
    }
    if let Some(max) = service.max_instances {
        if max < service.min_instances {
            problems.push(
                child(service_pointer, "max_instances"),
                format!("{max} is below min_instances {}", service.min_instances),
            );
        } else if service.instances > max {
            problems.push(
                child(service_pointer, "instances"),
                format!("{} is above max_instances {max}", service.instances),
            );
        }
    }
}

/// A dependency cycle, as the services along it (first repeated at the end).
fn find_cycle(services: &BTreeMap<String, Service>) -> Option<Vec<String>> {
    fn visit(
        name: &str,
        services: &BTreeMap<String, Service>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|seen| seen == name) {
            let mut cycle = path[start..].to_vec();
            cycle.push(name.to_owned());
            return Some(cycle);
        }
        if done.contains(name) {
            return None;
        }
        path.push(name.to_owned());
        for dependency in services.get(name).map(|s| s.depends_on.as_slice()).unwrap_or_default() {
            if dependency.service != name {
                if let Some(cycle) = visit(&dependency.service, services, path, done) {
                    return Some(cycle);
                }
            }
        }
        path.pop();
        done.insert(name.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    services
        .keys()
        .find_map(|name| visit(name, services, &mut Vec::new(), &mut done))
}

/// Services in waves: each wave depends only on the waves before it, so a wave starts once
/// the one before is ready. Assumes no cycles (the reader refuses them).
pub fn start_order(services: &BTreeMap<String, Service>) -> Vec<Vec<String>> {
    let mut placed: BTreeSet<&str> = BTreeSet::new();
    let mut waves = Vec::new();
    while placed.len() < services.len() {
        let wave: Vec<&str> = services
            .iter()
            .filter(|(name, _)| !placed.contains(name.as_str()))
            .filter(|(_, service)| {
                service.depends_on.iter().all(|dependency| {
                    placed.contains(dependency.service.as_str()) || !services.contains_key(&dependency.service)
                })
            })
            .map(|(name, _)| name.as_str())
            .collect();
        if wave.is_empty() {
            break;
        }
        placed.extend(wave.iter().copied());
        waves.push(wave.into_iter().map(str::to_owned).collect());
    }
    waves
}

/// Whether the network of `class` has no route out: as declared, else internal by default
/// unless one of the class's services publishes a port.
pub fn class_is_internal(
    class: ServiceClass,
    services: &BTreeMap<String, Service>,
    networks: &BTreeMap<ServiceClass, ClassNetwork>,
) -> bool {
    if let Some(network) = networks.get(&class) {
        return network.internal;
    }
    class.internal_by_default()
        && !services
            .values()
            .any(|service| service.class == class && service.published_ports().next().is_some())
}

/// The classes whose networks a service joins: its own, and those of the services it
/// depends on (so it reaches them by name).
pub fn networks_of(name: &str, services: &BTreeMap<String, Service>) -> BTreeSet<ServiceClass> {
    let service = &services[name];
    let mut classes = BTreeSet::from([service.class]);
    classes.extend(
        service
            .depends_on
            .iter()
            .filter_map(|dependency| services.get(&dependency.service))
            .map(|dependency| dependency.class),
    );
    classes
}
