"""OpenAI's Files and Batch API, served by the router (README "Files and batches")."""
