"""The service layer: every rule about datasets, models, runs, approvals and deployments lives
here once, shared by operators, the CLI and the REST API. Functions take a SQLAlchemy session
(from `patient_ml.db.engine.session_scope`) and an actor, and write an audit event for every
state change in the same transaction. The pipeline stages' orchestrators (`curation`,
`tuning`, `evaluation_run`, `model_cards`) take an engine instead and open their own sessions
around the stage's work, so the stages themselves never import this layer."""
