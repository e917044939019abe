"""End-to-end flows and their assertions, shared by the embedded-broker tier
(tests/integration) and the docker tier (tests/docker): one definition of each outcome, so
the two tiers cannot drift apart."""
