"""What a call may do: the governance model, pure (no I/O), below the gateway, the provider and
the CLI, above the substrate.

Modules
    ``operations``    the one catalogue: write operations, gateway tools, model tools, quotas
    ``arguments``     each write operation's argument model (the one typed shape tool -> SQL)
    ``policies``      the policy catalogue: key, default, unit, description, who reads it
    ``vocabulary``    actor kinds, scratchpad kinds, visibility scopes, statuses, refusal codes
    ``capabilities``  the seeded capability matrix (49 capabilities, who is granted each)
    ``charter``       the role charter's markdown parser
    ``seeds``         what a new workspace is seeded with (default charter, constitution, rows)
    ``rules``         the constitution's rules engine (compile once, evaluate every write)
    ``redaction``     the secret redactor (logs, denial events, diagnostics)
    ``patterns``      regex folding shared by the two above
"""
