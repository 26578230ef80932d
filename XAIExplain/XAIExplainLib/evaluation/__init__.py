"""XAIExplainLib.evaluation"""
