"""Lock egress down (IPv4 and IPv6), roll back safely, and prove it with real packets.

policy = make_policy(allow=["192.168.10.0/24"], dns=["192.168.10.1"])
print(plan_text(policy, "nft"))          # touches nothing
apply(policy, confirm_timeout=60)          # rolls back by itself unless confirm() runs
confirm()
verify(expect_reachable=[("192.168.10.5", 5000)]).ok
persist(); status(); rollback()
"""

from offline.firewall.apply import Applied, RolledBack, apply, confirm, rollback
from offline.firewall.persist import Persisted, Status, persist, status
from offline.firewall.policy import Policy, make_policy
from offline.firewall.render import plan_text
from offline.firewall.verify import Targets, Verification, parse_reachable, verify

__all__ = [
    "Applied",
    "Persisted",
    "Policy",
    "RolledBack",
    "Status",
    "Targets",
    "Verification",
    "apply",
    "confirm",
    "make_policy",
    "parse_reachable",
    "persist",
    "plan_text",
    "rollback",
    "status",
    "verify",
]
