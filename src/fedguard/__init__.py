"""fedguard: privacy-preserving federated threat detection.

Cloud agents train a shared threat-detection model on their own data and send only
Paillier-encrypted, packed model updates; the orchestrator adds ciphertexts, decrypts
only the sum and acts on fleet-wide threat metrics.
"""

__version__ = "0.1.0"
