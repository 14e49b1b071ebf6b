//! `run-as-non-root`: every container, init container and ephemeral container must be proven
//! to run as a non-root user, from its effective security context (the container's fields
//! override the pod's). An explicit `runAsUser: 0` is never acceptable.

use super::{ContainerRef, Finding, Target};
use crate::policy::RunAsNonRoot;

pub fn check<'a>(
    params: &'a RunAsNonRoot,
    target: &'a Target<'a>,
) -> impl Iterator<Item = Finding> + 'a {
    let pod = target.pod_security_context();
    target.containers().filter_map(move |c: ContainerRef| {
        let own = c.security_context;
        let container_user = own.and_then(|s| s.run_as_user);
        let user = container_user.or(pod.and_then(|p| p.run_as_user));
        let non_root = own
            .and_then(|s| s.run_as_non_root)
            .or(pod.and_then(|p| p.run_as_non_root));
        if user == Some(0) {
            let field = if container_user.is_some() {
                target.container_field(&c, "securityContext.runAsUser")
            } else {
                target.pod_field("securityContext.runAsUser")
            };
            return Some(Finding {
                subject: c.subject(),
                field,
                problem: "runs as root (runAsUser: 0)".into(),
                fix: "set securityContext.runAsUser to a non-zero UID".into(),
                add: target.add_to_container(
                    &c,
                    "securityContext:\n  runAsUser: 10001  # any non-zero UID\n  runAsNonRoot: true",
                ),
            });
        }
        let proven =
            non_root == Some(true) || (params.accept_non_zero_run_as_user && user.is_some());
        (!proven).then(|| {
            let (field, add) = target.container_fix(
                &c,
                "securityContext.runAsNonRoot",
                "securityContext:\n  runAsNonRoot: true",
            );
            Finding {
                subject: c.subject(),
                field,
                problem: "may run as root".into(),
                fix: if params.accept_non_zero_run_as_user {
                    "set securityContext.runAsNonRoot: true or a non-zero runAsUser".into()
                } else {
                    "set securityContext.runAsNonRoot: true".into()
                },
                add,
            }
        })
    })
}
