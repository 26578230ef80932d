"""XAIExplainLib.engine"""
