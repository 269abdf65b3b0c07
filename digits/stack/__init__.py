"""Running the whole stack: with Docker Compose where an engine answers, else as local processes that
read their services, commands and environment from docker-compose.yml.
"""
