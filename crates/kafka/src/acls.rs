//! CreateAcls, DescribeAcls and DeleteAcls (KIP-140), over the same store as
//! `strata acl`: changing ACLs takes Alter on the cluster, reading them Describe (or a
//! super user). Each creation and each filter is answered on its own; a malformed one
//! gets INVALID_REQUEST with what is wrong, and changes nothing.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::*;
use strata_auth::acl::FilterPattern;
use strata_auth::{AclBinding, AclFilter, Operation, PatternType, Permission, ResourceType};

use crate::errors;
use crate::{Context, Session, str};

fn invalid(e: impl std::fmt::Display) -> (i16, String) {
    (ResponseError::InvalidRequest.code(), e.to_string())
}

/// A specific value of a binding's field (ANY is no binding's).
fn specific<T>(
    kind: &str,
    v: Result<Option<T>, strata_auth::AuthError>,
) -> Result<T, (i16, String)> {
    v.map_err(invalid)?
        .ok_or_else(|| invalid(format!("a binding needs a specific {kind}, not ANY")))
}

fn binding(c: &create_acls_request::AclCreation) -> Result<AclBinding, (i16, String)> {
    let b = AclBinding {
        resource_type: specific("resource type", ResourceType::from_code(c.resource_type))?,
        name: c.resource_name.to_string(),
        pattern: specific(
            "pattern type",
            PatternType::from_code(c.resource_pattern_type),
        )?,
        principal: c.principal.to_string(),
        host: c.host.to_string(),
        operation: specific("operation", Operation::from_code(c.operation))?,
        permission: specific("permission type", Permission::from_code(c.permission_type))?,
    };
    b.validate().map_err(invalid)?;
    Ok(b)
}

pub async fn create_acls(
    ctx: &Context,
    session: &Session,
    r: CreateAclsRequest,
) -> CreateAclsResponse {
    let mut resp = CreateAclsResponse::default();
    let answer = |e: Option<(i16, String)>| {
        let mut a = create_acls_response::AclCreationResult::default();
        if let Some((code, msg)) = e {
            a.error_code = code;
            a.error_message = Some(str(&msg));
        }
        a
    };
    let store = match ctx.admin(session, Operation::Alter) {
        Ok(s) => s,
        Err(e) => {
            let e = (errors::code(&e), e.to_string());
            resp.results = r
                .creations
                .iter()
                .map(|_| answer(Some(e.clone())))
                .collect();
            return resp;
        }
    };
    let parsed: Vec<_> = r.creations.iter().map(binding).collect();
    let good: Vec<AclBinding> = parsed
        .iter()
        .filter_map(|b| b.as_ref().ok().cloned())
        .collect();
    let stored = if good.is_empty() {
        Ok(())
    } else {
        store
            .create_acls(good)
            .await
            .map_err(|e| (errors::code(&e), e.to_string()))
    };
    if stored.is_ok() {
        for b in parsed.iter().flatten() {
            tracing::info!(principal = %session.caller.principal, acl = %b, "ACL created");
        }
    }
    resp.results = parsed
        .into_iter()
        .map(|b| answer(b.and_then(|_| stored.clone()).err()))
        .collect();
    resp
}

/// A filter from its wire fields.
#[allow(clippy::too_many_arguments)]
fn filter(
    resource_type: i8,
    name: Option<&str>,
    pattern: i8,
    principal: Option<&str>,
    host: Option<&str>,
    operation: i8,
    permission: i8,
) -> Result<AclFilter, (i16, String)> {
    Ok(AclFilter {
        resource_type: ResourceType::from_code(resource_type).map_err(invalid)?,
        name: name.map(str::to_string),
        pattern: FilterPattern::from_code(pattern).map_err(invalid)?,
        principal: principal.map(str::to_string),
        host: host.map(str::to_string),
        operation: Operation::from_code(operation).map_err(invalid)?,
        permission: Permission::from_code(permission).map_err(invalid)?,
    })
}

pub fn describe_acls(
    ctx: &Context,
    session: &Session,
    r: DescribeAclsRequest,
) -> DescribeAclsResponse {
    let mut resp = DescribeAclsResponse::default();
    let found = ctx
        .admin(session, Operation::Describe)
        .map_err(|e| (errors::code(&e), e.to_string()))
        .and_then(|s| {
            let f = filter(
                r.resource_type_filter,
                r.resource_name_filter.as_deref(),
                r.pattern_type_filter,
                r.principal_filter.as_deref(),
                r.host_filter.as_deref(),
                r.operation,
                r.permission_type,
            )?;
            Ok(s.acls(&f))
        });
    match found {
        Ok(bindings) => {
            // Grouped by resource pattern, as Kafka answers.
            for b in bindings {
                let mut acl = describe_acls_response::AclDescription::default();
                acl.principal = str(&b.principal);
                acl.host = str(&b.host);
                acl.operation = b.operation.code();
                acl.permission_type = b.permission.code();
                let same = |r: &describe_acls_response::DescribeAclsResource| {
                    r.resource_type == b.resource_type.code()
                        && r.resource_name.as_str() == b.name
                        && r.pattern_type == b.pattern.code()
                };
                match resp.resources.iter_mut().find(|r| same(r)) {
                    Some(r) => r.acls.push(acl),
                    None => {
                        let mut r = describe_acls_response::DescribeAclsResource::default();
                        r.resource_type = b.resource_type.code();
                        r.resource_name = str(&b.name);
                        r.pattern_type = b.pattern.code();
                        r.acls.push(acl);
                        resp.resources.push(r);
                    }
                }
            }
        }
        Err((code, msg)) => {
            resp.error_code = code;
            resp.error_message = Some(str(&msg));
        }
    }
    resp
}

pub async fn delete_acls(
    ctx: &Context,
    session: &Session,
    r: DeleteAclsRequest,
) -> DeleteAclsResponse {
    let mut resp = DeleteAclsResponse::default();
    let failed = |(code, msg): (i16, String)| {
        let mut f = delete_acls_response::DeleteAclsFilterResult::default();
        f.error_code = code;
        f.error_message = Some(str(&msg));
        f
    };
    let store = match ctx.admin(session, Operation::Alter) {
        Ok(s) => s,
        Err(e) => {
            let e = (errors::code(&e), e.to_string());
            resp.filter_results = r.filters.iter().map(|_| failed(e.clone())).collect();
            return resp;
        }
    };
    let parsed: Vec<_> = r
        .filters
        .iter()
        .map(|f| {
            filter(
                f.resource_type_filter,
                f.resource_name_filter.as_deref(),
                f.pattern_type_filter,
                f.principal_filter.as_deref(),
                f.host_filter.as_deref(),
                f.operation,
                f.permission_type,
            )
        })
        .collect();
    let good: Vec<AclFilter> = parsed
        .iter()
        .filter_map(|f| f.as_ref().ok().cloned())
        .collect();
    let deleted = store.delete_acls(good).await;
    let mut deleted = match deleted {
        Ok(d) => d.into_iter(),
        Err(e) => {
            let e = (errors::code(&e), e.to_string());
            resp.filter_results = r.filters.iter().map(|_| failed(e.clone())).collect();
            return resp;
        }
    };
    for p in parsed {
        resp.filter_results.push(match p {
            Err(e) => failed(e),
            Ok(_) => {
                let mut f = delete_acls_response::DeleteAclsFilterResult::default();
                for b in deleted.next().unwrap_or_default() {
                    tracing::info!(principal = %session.caller.principal, acl = %b, "ACL deleted");
                    let mut m = delete_acls_response::DeleteAclsMatchingAcl::default();
                    m.resource_type = b.resource_type.code();
                    m.resource_name = str(&b.name);
                    m.pattern_type = b.pattern.code();
                    m.principal = str(&b.principal);
                    m.host = str(&b.host);
                    m.operation = b.operation.code();
                    m.permission_type = b.permission.code();
                    f.matching_acls.push(m);
                }
                f
            }
        });
    }
    resp
}
