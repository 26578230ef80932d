"""XAIExplainLib.models"""
