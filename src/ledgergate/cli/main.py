"""The ``ledgergate`` command: thin commands over services."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="ledgergate",
    help="Identity-aware gateway that records every command and chunk on a verifiable ledger.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    from ledgergate.cli import (
        agent,
        audit,
        evidence,
        identities,
        insights,
        login,
        policy,
        retention,
        reviews,
        search,
        serve,
        sessions,
        store,
        token,
    )

    serve.register(app)
    agent.register(app)
    search.register(app)
    insights.register(app)
    login.register(app)
    login.register_aws(app)
    login.register_ssh(app)
    app.add_typer(token.app, name="token", help="Mint, list, rotate and revoke gateway tokens.")
    app.add_typer(identities.app, name="identities", help="List, disable and enable identities.")
    app.add_typer(identities.grants_app, name="grants", help="Grants made outside the YAML file.")
    app.add_typer(
        policy.app, name="policy", help="Check and explain the policy; keep rules in the store."
    )
    app.add_typer(audit.app, name="audit", help="Verify, prove and export the ledger.")
    app.add_typer(evidence.app, name="evidence", help="Evidence bundles for auditors.")
    app.add_typer(retention.app, name="retention", help="Apply the retention rules.")
    app.add_typer(sessions.app, name="sessions", help="List, show and replay recorded sessions.")
    app.add_typer(store.app, name="store", help="Migrate the store; copy it to another engine.")
    app.add_typer(
        reviews.request_app, name="request", help="Ask for time-boxed access (as yourself)."
    )
    app.add_typer(reviews.app, name="reviews", help="List, approve and deny reviews (as yourself).")


_register()

if __name__ == "__main__":
    app()
