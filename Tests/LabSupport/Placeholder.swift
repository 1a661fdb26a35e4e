// LabSupport: see Lab.swift
