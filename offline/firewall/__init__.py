"""Lock egress down (IPv4 and IPv6), roll back safely, and prove it with real packets.

Import from the modules (the package imports nothing, like every package of the toolkit)::

    from offline.firewall.policy import make_policy
    from offline.firewall.render import plan_text
    from offline.firewall.apply import apply, confirm, rollback
    from offline.firewall.verify import verify
    from offline.firewall.persist import persist, status

    policy = make_policy(allow=["192.168.10.0/24"], dns=["192.168.10.1"])
    print(plan_text(policy, "nft"))          # touches nothing
    apply(policy, confirm_timeout=60)          # rolls back by itself unless confirm() runs
    confirm()
    verify(expect_reachable=[("192.168.10.5", 5000)]).ok
    persist(); status(); rollback()
"""
