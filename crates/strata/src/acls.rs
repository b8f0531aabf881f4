//! `strata acl`: Kafka-style access control lists, managed over gRPC (the broker
//! stores them in the controller, or a single broker's `security/acls.json`).

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use strata_client::pb;

use crate::cli::BrokerArg;

#[derive(Subcommand, Debug)]
pub enum AclCommand {
    /// Allow or deny principals operations on a resource, e.g.
    /// `strata acl add --allow User:alice --operation read --topic orders`.
    Add(Binding),
    /// The bindings naming a principal or resource (every one, with no flag).
    List {
        /// Only bindings for this principal (User:NAME or User:*).
        #[arg(long)]
        principal: Option<String>,
        #[command(flatten)]
        resource: Resource,
        /// Only prefixed bindings of the name (without it: every binding covering it).
        #[arg(long)]
        prefixed: bool,
    },
    /// Remove bindings: the same flags as `add`, naming exactly what to remove.
    Remove(Binding),
}

/// One or more bindings: each principal, each operation, on one resource.
#[derive(Args, Debug)]
pub struct Binding {
    /// A principal to allow (User:NAME, or User:* for everyone); repeatable.
    #[arg(long = "allow")]
    allow: Vec<String>,
    /// A principal to deny (a deny wins over any allow); repeatable.
    #[arg(long = "deny")]
    deny: Vec<String>,
    /// read, write, create, delete, alter, describe, describe-configs, alter-configs,
    /// cluster-action, idempotent-write or all; repeatable.
    #[arg(long = "operation", required = true)]
    operations: Vec<String>,
    /// The client address the binding applies to [default: any].
    #[arg(long, default_value = "*")]
    host: String,
    #[command(flatten)]
    resource: Resource,
    /// The name is a prefix: the binding covers every name that starts with it.
    #[arg(long)]
    prefixed: bool,
}

/// The resource: a topic, a group, or the cluster.
#[derive(Args, Debug)]
#[group(multiple = false)]
pub struct Resource {
    /// A topic name (* for every topic).
    #[arg(long)]
    topic: Option<String>,
    /// A consumer group name (* for every group).
    #[arg(long)]
    group: Option<String>,
    /// The cluster itself (user and ACL management, creating topics, idempotence).
    #[arg(long)]
    cluster: bool,
}

impl Resource {
    /// `(type, name)`, if one is named.
    fn named(&self) -> Option<(&'static str, String)> {
        match (&self.topic, &self.group, self.cluster) {
            (Some(t), _, _) => Some(("topic", t.clone())),
            (_, Some(g), _) => Some(("group", g.clone())),
            (_, _, true) => Some(("cluster", strata_auth::acl::CLUSTER_NAME.to_string())),
            _ => None,
        }
    }
}

impl Binding {
    fn acls(&self) -> Result<Vec<pb::Acl>> {
        let Some((resource_type, name)) = self.resource.named() else {
            bail!("name the resource: --topic NAME, --group NAME or --cluster");
        };
        if self.allow.is_empty() && self.deny.is_empty() {
            bail!("name who the binding is for: --allow User:NAME or --deny User:NAME");
        }
        let who = self
            .allow
            .iter()
            .map(|p| (p, "allow"))
            .chain(self.deny.iter().map(|p| (p, "deny")));
        let mut out = Vec::new();
        for (principal, permission) in who {
            for op in &self.operations {
                out.push(pb::Acl {
                    resource_type: resource_type.to_string(),
                    name: name.clone(),
                    pattern: if self.prefixed { "prefixed" } else { "literal" }.to_string(),
                    principal: principal.clone(),
                    host: self.host.clone(),
                    operation: op.clone(),
                    permission: permission.to_string(),
                });
            }
        }
        Ok(out)
    }
}

pub async fn acl(command: AclCommand, broker: &BrokerArg) -> Result<()> {
    let client = broker.connect().await?;
    match command {
        AclCommand::Add(b) => {
            let acls = b.acls()?;
            client.create_acls(acls.clone()).await?;
            for a in &acls {
                println!("added: {}", show(a));
            }
        }
        AclCommand::List {
            principal,
            resource,
            prefixed,
        } => {
            let (resource_type, name) = resource.named().unzip();
            let filter = pb::AclFilter {
                resource_type: resource_type.map(str::to_string),
                // With a name, every binding that covers it (literal, * and prefixes).
                pattern: name
                    .as_ref()
                    .map(|_| if prefixed { "prefixed" } else { "match" }.to_string()),
                name,
                principal,
                ..Default::default()
            };
            for a in client.list_acls(filter).await? {
                println!("{}", show(&a));
            }
        }
        AclCommand::Remove(b) => {
            let mut removed = 0;
            for a in b.acls()? {
                let filter = pb::AclFilter {
                    resource_type: Some(a.resource_type),
                    name: Some(a.name),
                    pattern: Some(a.pattern),
                    principal: Some(a.principal),
                    host: Some(a.host),
                    operation: Some(a.operation),
                    permission: Some(a.permission),
                };
                for gone in client.delete_acls(filter).await? {
                    println!("removed: {}", show(&gone));
                    removed += 1;
                }
            }
            if removed == 0 {
                bail!("no binding matched; list them with `strata acl list`");
            }
        }
    }
    Ok(())
}

/// One line per binding, the way `kafka-acls --list` reads.
fn show(a: &pb::Acl) -> String {
    format!(
        "{} {} {} from {} on {} {} {:?}",
        a.permission, a.principal, a.operation, a.host, a.pattern, a.resource_type, a.name
    )
}
