"""APIM: the policies, and provisioning and clean-up as plan → apply.

``templating``, ``event_expression``, ``policy``  the policy templates, the C# event, rendering
``openapi``, ``contracts``, ``resources``         the API document; what a spec asks of Azure
``arm``, ``preflight``, ``plan``, ``provision``   clients and reads/writes; api-version checks;
                                                  the plan; plan → apply and the dry run
``cleanup_apply``, ``cleanup``                    clean-up: its steps and apply; its plan

Imports ``azure.roles``, ``azure.functions`` (clean-up of the function's settings), ``core``,
``db`` and the top level.
"""

__all__: list[str] = []
