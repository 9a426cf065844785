"""The Kafka bus: the event envelope, the topics, the publisher, and the consumer loop with
dead-lettering.
"""
