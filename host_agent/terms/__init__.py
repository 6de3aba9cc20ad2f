"""First-party terms (docs/agreements.md): what an agent accepts, proffers and holds a stream for.

Its modules are imported by path; the package re-exports nothing: `policy` (the decisions, pure),
`roster` (the standard agreements), `signed` (the signed messages as typed values), `records` (the
agreements table), `view` (an agreement as it is shown), `desk` (the agent's side), `mqtt` (terms
over MQTT) and `refused` (the desk's one error).
"""

__all__: list[str] = []
